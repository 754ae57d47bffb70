"""Admin views of campaigns and their sending records.

Campaigns change only through the services (pages and API), which keep approval and audit
consistent; here an admin can look them up and cancel them. Runs, batches and deliveries are
written by the send pipeline and are view-only.
"""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from campaigns.models import Approval, Campaign, CampaignRun, Delivery, DispatchBatch
from campaigns.services import campaign_cancel
from smsblast.admin_utils import ReadOnlyAdmin, ReadOnlyTabularInline, ShownRowsInline
from smsblast.errors import ServiceError


class ApprovalInline(ReadOnlyTabularInline):
    model = Approval
    fields = ["created_at", "approver", "decision", "content_hash", "reason", "voided_at"]


class CampaignRunInline(ShownRowsInline):
    """The latest runs: a daily campaign gains one a day; the run list filtered by the campaign has all."""

    model = CampaignRun
    fields = ["scheduled_for", "status", "segments", "started_at", "finished_at"]
    show_change_link = True
    shown = 20
    shown_note = gettext_lazy("The latest %(shown)s of %(total)s runs are shown.")
    every_row_label = gettext_lazy("All runs of this campaign")

    def every_row_url(self, parent) -> str:
        return f"{reverse('admin:campaigns_campaignrun_changelist')}?campaign__id__exact={parent.pk}"


@admin.register(Campaign)
class CampaignAdmin(ReadOnlyAdmin):
    list_display = ["title", "status", "mode", "priority", "sender", "author", "next_run_at", "created_at"]
    list_filter = ["status", "mode", "priority", "exercise"]
    search_fields = ["title", "text", "sender", "author__username"]
    list_select_related = ["author"]
    date_hierarchy = "created_at"
    raw_id_fields = ["author"]
    inlines = [ApprovalInline, CampaignRunInline]
    actions = ["cancel"]

    @admin.action(description=gettext_lazy("Cancel selected campaigns"))
    def cancel(self, request, queryset):
        cancelled = 0
        for campaign in queryset:
            try:
                campaign_cancel(campaign=campaign, actor=request.user, reason="Cancelled in the admin.")
            except ServiceError as exc:
                self.message_user(request, f"{campaign}: {exc}", messages.WARNING)
            else:
                cancelled += 1
        self.message_user(request, _("Cancelled %(count)s campaign(s).") % {"count": cancelled}, messages.SUCCESS)


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    list_display = ["campaign", "decision", "approver", "created_at", "voided_at"]
    list_filter = ["decision"]
    search_fields = ["campaign__title", "approver__username", "content_hash"]
    list_select_related = ["campaign", "approver"]
    raw_id_fields = ["campaign", "approver"]
    # An area broadcast's frozen boundaries: megabytes of coordinates for a province, of no use read on a page.
    exclude = ["area_shapes"]


@admin.register(CampaignRun)
class CampaignRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "campaign", "scheduled_for", "status", "segments", "started_at", "finished_at"]
    list_filter = ["status"]
    search_fields = ["campaign__title", "content_hash"]
    list_select_related = ["campaign"]
    date_hierarchy = "scheduled_for"
    raw_id_fields = ["campaign"]


@admin.register(DispatchBatch)
class DispatchBatchAdmin(ReadOnlyAdmin):
    list_display = ["id", "run", "operator", "status", "size", "attempts", "throttled", "accepted_count", "updated_at"]
    list_filter = ["status", "operator"]
    search_fields = ["id", "last_error"]
    list_select_related = ["run", "operator"]
    raw_id_fields = ["run", "operator"]
    show_full_result_count = False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ["id", "msisdn", "run", "operator", "status", "reason", "error_code", "done_at"]
    list_filter = ["status", "operator"]
    # Exact matches only: a substring search over millions of deliveries would scan them all.
    search_fields = ["=msisdn", "=operator_ref"]
    list_select_related = ["run", "operator"]
    raw_id_fields = ["run", "batch", "operator"]
    show_full_result_count = False
