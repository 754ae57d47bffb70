"""What each campaign notification says and to whom: approvers of a submitted campaign, the author of a decided
one, of a run that ended or stalled. Written in the installation's language (LANGUAGE_CODE), with a link to
the page to act on; called inside the transaction of the change (smsblast.notifications).
"""

from django.conf import settings
from django.db.models import Count
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext as _

from campaigns.models import Campaign, CampaignRun, Delivery
from smsblast.models import Role, User, area_code_within
from smsblast.notifications import notifications_create
from smsblast.templatetags.ui import audit_reason_label, local_time


def campaign_approvers(campaign: Campaign) -> list[User]:
    """Return the active approvers who may decide on the campaign: not its author, its target within their reach."""
    approvers = (
        User.objects.filter(groups__name=Role.APPROVER, is_active=True)
        .exclude(pk=campaign.author_id)
        .select_related("jurisdiction")
        .order_by("pk")
    )
    # By role, as campaign_check_actor decides: a user in several groups has the first role of them only.
    return [
        user
        for user in approvers
        if user.has_role(Role.APPROVER) and area_code_within(campaign.area_scope, user.jurisdiction_code)
    ]


def _page(name: str, campaign: Campaign) -> str:
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}{reverse(name, args=[campaign.pk])}"


def campaign_notify_submitted(*, campaign: Campaign) -> None:
    """Ask the campaign's approvers to review it."""
    with translation.override(settings.LANGUAGE_CODE):
        notifications_create(
            users=campaign_approvers(campaign),
            kind="campaign.submitted",
            object_id=campaign.pk,
            subject=_("Waiting for your approval: %(title)s") % {"title": _title(campaign.title)},
            body=_(
                "%(author)s submitted the campaign “%(title)s” for approval.\n\n"
                "Review its exact text, area, audience and cost, then approve or reject it:\n%(url)s\n"
            )
            % {
                "author": _person(campaign.author),
                "title": _title(campaign.title),
                "url": _page("campaigns:review", campaign),
            },
        )


def campaign_notify_decided(*, campaign: Campaign, approver: User, approved: bool, reason: str = "") -> None:
    """Tell the author that their campaign was approved (and may be scheduled) or rejected, and why."""
    with translation.override(settings.LANGUAGE_CODE):
        values = {
            "approver": _person(approver),
            "title": _title(campaign.title),
            "url": _page("campaigns:detail", campaign),
        }
        if approved:
            subject = _("Approved: %(title)s") % values
            body = _(
                "%(approver)s approved the campaign “%(title)s”.\n\nStart its schedule on the campaign page:\n%(url)s\n"
            )
        else:
            subject = _("Rejected: %(title)s") % values
            body = _(
                "%(approver)s rejected the campaign “%(title)s”.\n\n"
                "Reason: %(reason)s\n\n"
                "Edit it and submit it again:\n%(url)s\n"
            )
            values["reason"] = audit_reason_label(reason)
        notifications_create(
            users=[campaign.author],
            kind="campaign.approved" if approved else "campaign.rejected",
            object_id=campaign.pk,
            subject=subject,
            body=body % values,
        )


def run_notify_ended(*, run: CampaignRun) -> None:
    """Tell the author that a run ended, with its recipients counted by final status."""
    campaign = run.campaign
    counts = dict(run.deliveries.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
    with translation.override(settings.LANGUAGE_CODE):
        lines = "\n".join(
            f"- {Delivery.Status(status).label}: {counts[status]:,}".replace(",", ".")
            for status in Delivery.Status.values
            if counts.get(status)
        )
        values = {
            "title": _run_title(run),
            "scheduled": local_time(run.scheduled_for, campaign),
            "counts": lines or "-",
            "url": _page("campaigns:detail", campaign),
        }
        if run.status == CampaignRun.Status.COMPLETED_WITH_FAILURES:
            subject = _("Sent with failures: %(title)s") % values
            body = _(
                "The run of “%(title)s” scheduled for %(scheduled)s ended, and some messages were not delivered.\n\n"
                "%(counts)s\n\nThe report names every recipient and why:\n%(url)s\n"
            )
        else:
            subject = _("Sent: %(title)s") % values
            body = _(
                "The run of “%(title)s” scheduled for %(scheduled)s ended.\n\n"
                "%(counts)s\n\nDetails and report:\n%(url)s\n"
            )
        notifications_create(
            users=[campaign.author], kind="run.ended", object_id=run.pk, subject=subject, body=body % values
        )


def run_notify_broadcast_ended(*, run: CampaignRun) -> None:
    """Tell the author that an area broadcast's window ended, with the handsets each operator reached."""
    from operators.models import AreaBroadcast  # operators builds on campaigns

    campaign = run.campaign
    broadcasts = AreaBroadcast.objects.filter(run=run).select_related("operator").order_by("operator__name")
    with translation.override(settings.LANGUAGE_CODE):
        lines = "\n".join(
            f"- {sent.operator.name}: {sent.handsets_reached:,}".replace(",", ".")
            if sent.state == AreaBroadcast.State.COMPLETED
            else f"- {sent.operator.name}: {AreaBroadcast.State(sent.state).label}"
            for sent in broadcasts
        )
        values = {
            "title": _title(campaign.title),
            "ended": local_time(run.finished_at, campaign),
            "lines": lines or "-",
            "url": _page("campaigns:detail", campaign),
        }
        failed = run.status == CampaignRun.Status.COMPLETED_WITH_FAILURES
        subject = _("Broadcast ended with failures: %(title)s") if failed else _("Broadcast ended: %(title)s")
        subject %= values
        body = _(
            "The area broadcast “%(title)s” ended at %(ended)s. Handsets reached, per operator:\n\n"
            "%(lines)s\n\nDetails:\n%(url)s\n"
        )
        notifications_create(
            users=[campaign.author], kind="run.ended", object_id=run.pk, subject=subject, body=body % values
        )


def campaign_notify_window_missed(*, campaign: Campaign) -> None:
    """Tell the author that an approved area broadcast's window ended before it could start, so nothing was sent."""
    with translation.override(settings.LANGUAGE_CODE):
        values = {
            "title": _title(campaign.title),
            "ended": local_time(campaign.ends_at, campaign),
            "url": _page("campaigns:detail", campaign),
        }
        subject = _("Not broadcast: %(title)s") % values
        body = _(
            "The window of the area broadcast “%(title)s” ended at %(ended)s before it could start, so nothing was "
            "sent and the campaign is cancelled. If the warning still holds, copy it into a new draft with a new "
            "window:\n%(url)s\n"
        )
        notifications_create(
            users=[campaign.author],
            kind="campaign.window_missed",
            object_id=campaign.pk,
            subject=subject,
            body=body % values,
        )


def campaign_notify_run_missed(*, campaign: Campaign, scheduled_for) -> None:
    """Tell the author that a run due at `scheduled_for` was missed by longer than its validity and not sent."""
    with translation.override(settings.LANGUAGE_CODE):
        values = {
            "title": _title(campaign.title),
            "due": local_time(scheduled_for, campaign),
            "minutes": campaign.validity_minutes,
            "url": _page("campaigns:detail", campaign),
        }
        subject = _("Not sent: %(title)s") % values
        body = _(
            "The run of “%(title)s” due at %(due)s could not start in time: it was missed by longer than its "
            "validity of %(minutes)s minutes, so nothing was sent, rather than a warning that has expired. If it "
            "still holds, copy it into a new draft:\n%(url)s\n"
        )
        notifications_create(
            users=[campaign.author],
            kind="campaign.validity_missed",
            object_id=campaign.pk,
            subject=subject,
            body=body % values,
        )


def run_notify_stalled(
    *, run: CampaignRun, inactive_operators: list[str] = (), throttling_operators: list[str] = ()
) -> None:
    """Tell the author that a run has made no progress for a while, and which operators hold it when known."""
    campaign = run.campaign
    with translation.override(settings.LANGUAGE_CODE):
        values = {
            "title": _run_title(run),
            "since": local_time(run.last_progress_at, campaign),
            "inactive": ", ".join(inactive_operators),
            "throttling": ", ".join(throttling_operators),
            "url": _page("campaigns:detail", campaign),
        }
        body = _("The run of “%(title)s” has made no progress since %(since)s.\n\n") % values
        if inactive_operators:
            body += _("Its messages wait for operators that are deactivated: %(inactive)s.\n") % values
        if throttling_operators:
            body += _("These operators answer that it sends too fast (429): %(throttling)s.\n") % values
        body += _("\nProgress and history:\n%(url)s\n") % values
        notifications_create(
            users=[campaign.author],
            kind="run.stalled",
            object_id=run.pk,
            subject=_("No progress: %(title)s") % values,
            body=body,
        )


def _run_title(run: CampaignRun) -> str:
    """Return the title the run was sent with: its campaign may have been edited since (campaign_update)."""
    return _title((run.frozen or {}).get("title") or run.campaign.title)


def _title(title: str) -> str:
    """Return a campaign title on one line, as a body line quotes it.

    A title from the API or an imported CAP headline may hold line breaks, which would start lines of their own
    in the email, such as a link that reads as the page to act on.
    """
    return " ".join(title.split())


def _person(user: User | None) -> str:
    if user is None:
        return _("Someone")
    return user.get_full_name() or user.username
