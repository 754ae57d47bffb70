"""Officer and approver pages: dashboard, campaigns, compose, review, live progress.

Views check the role, validate input with a form and call the campaign services; they never write models
themselves. A refused action is shown as a message in the user's language, never as a 500.
"""

import difflib
import json
from collections import defaultdict
from datetime import datetime
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import OuterRef, Q, Subquery
from django.db.models.functions import Length
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import dateformat
from django.utils.dates import WEEKDAYS
from django.utils.html import escape
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.decorators.http import require_GET, require_POST

from campaigns import dispatch, scheduling, selectors, services
from campaigns.cap import CAP_VALUE_LABELS, cap_exportable
from campaigns.cap_import import cap_import
from campaigns.dispatch_selectors import run_progress_block, runs_progress
from campaigns.forms import ApproveForm, CampaignForm, CapImportForm, ConfirmForm, RejectForm
from campaigns.models import Approval, Campaign, CampaignRun, Mode
from campaigns.models import Delivery as DeliveryModel
from campaigns.selectors import campaign_zone, campaign_zones, target_zone
from operators.broadcast_selectors import broadcast_run_reach
from operators.broadcasts import broadcast_estimate, broadcast_operators
from operators.models import AreaBroadcast
from smsblast.errors import OutsideJurisdiction, ServiceConflict, ServiceError, ServiceForbidden, ServiceInvalid
from smsblast.health import health_dispatch_workers, health_status
from smsblast.models import Area, AuditEvent, Role, area_subtree_q
from smsblast.selectors import area_search_key
from smsblast.sms import TextError, analyze, hidden_characters, international_hosts
from smsblast.templatetags.svg import boundary_svg, line_chart_svg, series_colours
from smsblast.templatetags.ui import HIDDEN_KIND_LABELS, marked, sms_parts_marked

Status = Campaign.Status
Delivery = DeliveryModel.Status
ACTIVE_RUN_STATUSES = (CampaignRun.Status.PENDING, CampaignRun.Status.FANNING_OUT, CampaignRun.Status.SENDING)
STAFF_ROLES = (Role.OFFICER, Role.APPROVER, Role.ADMIN)
AREA_SEARCH_LIMIT = 20
CAMPAIGNS_PER_PAGE = 100
# What the pages call the fields a service names in a refusal, and the content fields the review page
# compares with the rejected version; a field not listed is shown by its name.
FIELD_LABELS = {
    "title": gettext_lazy("Title"),
    "text": gettext_lazy("Message text"),
    "sender": gettext_lazy("Sender ID"),
    "mode": gettext_lazy("Delivery mode"),
    "priority": gettext_lazy("Priority"),
    "area_codes": gettext_lazy("Coverage area"),
    "polygon": gettext_lazy("Drawn area"),
    "starts_at": gettext_lazy("Broadcast from"),
    "ends_at": gettext_lazy("Broadcast until"),
    "repeat_policy": gettext_lazy("Each handset receives it"),
    "operator_slugs": gettext_lazy("Operators"),
    "exercise": gettext_lazy("Exercise"),
    "schedule": gettext_lazy("Schedule"),
    "reason": gettext_lazy("Reason"),
    "audience": gettext_lazy("Recipients"),
    "validity_minutes": gettext_lazy("Valid for"),
    "instruction": gettext_lazy("Instruction"),
    "cap_category": gettext_lazy("Alert category"),
    "cap_event": gettext_lazy("Alert event"),
    "cap_urgency": gettext_lazy("Alert urgency"),
    "cap_severity": gettext_lazy("Alert severity"),
    "cap_certainty": gettext_lazy("Alert certainty"),
}


def role_required(*roles: str):
    """Let only users holding one of `roles` in; others get the 403 page with a message in their language."""

    def decorator(view):
        @wraps(view)
        @login_required
        def wrapped(request: HttpRequest, *args, **kwargs):
            if not request.user.has_role(*roles):
                raise PermissionDenied(_("Your role may not open this page."))
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def service_error_message(error: ServiceError, action: str = "") -> str:
    """Return what went wrong and what to do, in the user's language."""
    text = str(error)
    if isinstance(error, ServiceConflict) and "changed after you opened" in text:
        return _(
            "This campaign was changed after you opened this page (in another tab or by another user), so your "
            "changes were not saved. The form still holds them: compare with the campaign page, then save again "
            "to replace the current version."
        )
    if isinstance(error, ServiceConflict) and "changed since you reviewed" in text and action == "reject":
        return _(
            "The campaign was changed while you were reviewing it, so it was not rejected. "
            "Review the current version below and decide again."
        )
    if isinstance(error, ServiceConflict) and "changed since you reviewed" in text:
        return _(
            "The campaign was changed while you were reviewing it, so nothing was approved. "
            "Review the current version below and decide again."
        )
    if isinstance(error, ServiceConflict) and "its mode cannot change" in text:
        return _(
            "This campaign has runs, reported on as its mode, so its mode cannot change and nothing was saved. "
            'To send this content in the other mode, open the campaign and use "Copy into a new draft".'
        )
    if isinstance(error, ServiceConflict) and "was replaced by the update" in text:
        return _("Its update is approved already, so this older alert was not approved: reject it.")
    if isinstance(error, ServiceConflict) and action == "schedule" and "Only an approved campaign" in text:
        return _(
            "This cannot be done in the campaign's current state. Only an approved campaign can be scheduled. "
            "Reload the page to see its state."
        )
    if isinstance(error, ServiceConflict):
        return _("This cannot be done in the campaign's current state. Reload the page to see its state.")
    if isinstance(error, ServiceForbidden):
        if "wrote this campaign" in text:
            return _("You wrote this campaign; another approver must decide on it.")
        return _("Your role may not do this.")
    if isinstance(error, OutsideJurisdiction) and error.areas:
        return _("Outside your jurisdiction (%(jurisdiction)s): %(areas)s. Choose areas within it.") % {
            "jurisdiction": error.jurisdiction,
            "areas": ", ".join(error.areas),
        }
    if isinstance(error, OutsideJurisdiction):
        return _(
            "The drawn polygon does not lie within the known boundary of your jurisdiction (%(jurisdiction)s)."
        ) % {"jurisdiction": error.jurisdiction}
    if action == "schedule" and isinstance(error, ServiceInvalid) and set(error.errors) == {"schedule"}:
        # Starting the schedule of a one-off send whose time passed while it waited for approval.
        return _(
            "The schedule has no send time after now. Edit it to a later time; the changed campaign needs "
            "approving again."
        )
    # The fields refused for direction overrides or control characters (see services._check_complete).
    codes = error.codes if isinstance(error, ServiceInvalid) else {}
    refused = {field for field, code in codes.items() if code == services.REFUSED_CHARACTERS}
    if action == "approve" and refused:
        return _(
            "The campaign holds characters that reorder the text shown or that handsets do not show, marked with "
            "their code points below, so it was not approved: you and the handsets could read different text. "
            "Reject it so that its author removes them."
        )
    if "title" in refused:
        return _(
            "The title holds characters that reorder the text shown or that handsets do not show: the approver "
            "could read a different title. Edit the title to remove them, then submit again."
        )
    if "text" in refused:
        return _(
            "The text holds characters that reorder the text shown or that handsets do not show, marked with their "
            "code points on the campaign page: the approver and handsets could read different text. Edit the text "
            "to remove them, then submit again."
        )
    if isinstance(error, ServiceInvalid) and error.errors:
        fields = ", ".join(sorted(str(FIELD_LABELS.get(name, name)) for name in error.errors))
        return _("Some fields are missing or wrong (%(fields)s). Edit the campaign and try again.") % {"fields": fields}
    return _("The request was refused. Check what you entered and try again.")


# --- dashboard and lists -------------------------------------------------------------------


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """Show each role what needs its attention."""
    user = request.user
    if not user.has_role(*STAFF_ROLES):
        raise PermissionDenied(_("This account is for the operator API only; it has no pages."))
    context: dict = {}
    visible = selectors.campaigns_visible(user)
    if user.has_role(Role.APPROVER):
        inbox = visible.filter(status=Status.PENDING_APPROVAL).select_related("author").order_by("updated_at")
        context["inbox"] = inbox
        context["inbox_count"] = inbox.count()
    if user.has_role(Role.OFFICER, Role.ADMIN):
        mine = visible if user.has_role(Role.ADMIN) else visible.filter(author=user)
        context["drafts"] = mine.filter(status__in=[Status.DRAFT, Status.REJECTED])[:20]
        context["waiting"] = mine.filter(status__in=[Status.PENDING_APPROVAL, Status.APPROVED])[:20]
        context["scheduled"] = mine.filter(status=Status.SCHEDULED).order_by("next_run_at")[:20]
    running = visible.filter(status__in=[Status.SENDING, Status.PAUSED])
    if user.has_role(Role.OFFICER) and not user.has_role(Role.ADMIN):
        running = running.filter(author=user)
    latest = CampaignRun.objects.filter(campaign=OuterRef("pk")).order_by("-scheduled_for", "-id").values("pk")[:1]
    context["running"] = _running_progress(list(running.annotate(latest_run=Subquery(latest))[:20]))
    # What /healthz tells a prober, told to the people waiting for their campaigns: nothing else shows it.
    context["health"] = health = health_status()
    context["workers"] = workers = health_dispatch_workers()
    context["health_warned"] = health["redis"] == "down" or health["reconciler"] == "late" or workers == "late"
    return render(request, "campaigns/dashboard.html", context)


def _running_progress(campaigns: list[Campaign]) -> list[tuple[Campaign, dict | None]]:
    """Return each campaign (annotated with its `latest_run` id) with that run's progress: recipients of a targeted
    run, handsets reached by an area broadcast.

    The dashboard polls this every few seconds: the targeted runs are counted together, in the same few queries
    however many campaigns are sending.
    """
    runs = CampaignRun.objects.in_bulk([campaign.latest_run for campaign in campaigns if campaign.latest_run])
    targeted = [
        runs[campaign.latest_run]
        for campaign in campaigns
        if campaign.latest_run in runs and campaign.mode != Mode.AREA_BROADCAST
    ]
    progress = dict(zip((run.pk for run in targeted), runs_progress(targeted), strict=True))
    rows = []
    for campaign in campaigns:
        run = runs.get(campaign.latest_run)
        if run is not None and campaign.mode == Mode.AREA_BROADCAST:
            rows.append((campaign, broadcast_run_reach(run)))
        else:
            rows.append((campaign, progress.get(campaign.latest_run)))
    return rows


@role_required(*STAFF_ROLES)
def campaign_list(request: HttpRequest) -> HttpResponse:
    """List campaigns, filtered by state and a search over title and text."""
    status = request.GET.get("status", "")
    query = request.GET.get("q", "").strip()[:100]
    filters = {"status": status if status in Status.values else "", "q": query}
    campaigns = selectors.campaign_list(request.user, {key: value for key, value in filters.items() if value})
    # Every campaign stays reachable, page by page; a page number out of range shows the nearest page.
    page = Paginator(campaigns, CAMPAIGNS_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "campaigns/list.html",
        {"campaigns": page, "page": page, "status": status, "q": query, "statuses": Status.choices},
    )


# --- compose and edit ----------------------------------------------------------------------


@role_required(Role.OFFICER, Role.ADMIN)
def campaign_create(request: HttpRequest) -> HttpResponse:
    """Compose a new draft, its area the user's jurisdiction to begin with."""
    jurisdiction = request.user.jurisdiction_code
    initial = {"sender": "", "schedule_kind": "now", "area_codes": [jurisdiction] if jurisdiction else []}
    form = CampaignForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            campaign = services.campaign_create(author=request.user, **form.service_fields())
        except ServiceError as error:
            form.add_error(None, service_error_message(error))
        else:
            messages.success(request, _("Draft saved. Check it, then submit it for approval."))
            return redirect("campaigns:detail", pk=campaign.pk)
    return _compose(request, form, campaign=None)


@require_POST
@role_required(Role.OFFICER, Role.ADMIN)
def campaign_copy(request: HttpRequest, pk: int) -> HttpResponse:
    """Start a new draft from a campaign's content (a daily update, the same alert for another area)."""
    source = get_object_or_404(selectors.campaigns_visible(request.user), pk=pk)
    try:
        campaign, passed = services.campaign_copy(source=source, author=request.user)
    except ServiceError as error:
        if isinstance(error, ServiceForbidden):
            raise PermissionDenied(service_error_message(error)) from None
        messages.error(request, service_error_message(error))
        return redirect("campaigns:detail", pk=source.pk)
    messages.success(request, _("Copied into a new draft. Change what differs, save, then submit it for approval."))
    if passed:
        messages.warning(request, _("The copied time had already passed and was left out: set when to send."))
    return redirect("campaigns:edit", pk=campaign.pk)


@role_required(Role.OFFICER, Role.ADMIN)
def campaign_cap_import(request: HttpRequest) -> HttpResponse:
    """Import a CAP alert from its issuer as a draft area broadcast, or pass on the issuer's Cancel of one."""
    form = CapImportForm(request.POST, request.FILES) if request.method == "POST" else CapImportForm()
    refusal = ""
    if request.method == "POST" and form.is_valid():
        try:
            result = cap_import(raw=form.cleaned_data["raw"], actor=request.user)
        except ServiceError as error:
            refusal = _cap_import_refusal(error)
        else:
            campaign = result.campaign
            if result.action == "created":
                messages.success(
                    request,
                    _(
                        "Imported as a draft area broadcast. Check its text, area and window, then submit it for "
                        "approval."
                    ),
                )
            elif result.action == "rejected":
                messages.success(
                    request, _("The issuer's Cancel sent this campaign back to its author; it will not be approved.")
                )
            else:
                messages.success(request, _("The issuer's Cancel cancelled this campaign."))
            for note in result.notes:
                messages.info(request, _("From the alert: %(note)s") % {"note": note})
            return redirect("campaigns:detail", pk=campaign.pk)
    status_code = 400 if request.method == "POST" else 200
    return render(request, "campaigns/cap_import.html", {"form": form, "refusal": refusal}, status=status_code)


def _cap_import_refusal(error: ServiceError) -> str:
    """Say, in the user's language, why an alert was not imported, with the import's own reason."""
    if isinstance(error, OutsideJurisdiction):
        return _(
            "The alert's area lies outside your jurisdiction (%(jurisdiction)s): %(areas)s. The officers of those "
            "areas import it."
        ) % {"jurisdiction": error.jurisdiction, "areas": ", ".join(error.areas)}
    if isinstance(error, ServiceForbidden):
        return _("Your role may not do this.")
    if isinstance(error, ServiceConflict):
        return _("Nothing was imported: %(reason)s") % {"reason": error}
    return _("The alert was not imported: %(reason)s") % {"reason": error}


@role_required(Role.OFFICER, Role.ADMIN)
def campaign_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """Edit a draft, a rejected campaign, or an approved one (which then needs approving again)."""
    campaign = get_object_or_404(selectors.campaigns_visible(request.user), pk=pk)
    # A form posted after the campaign moved on (submitted or started in another tab) gets the service's
    # refusal beside the text it carries, which the 403 page would drop.
    allowed = "update" in services.campaign_allowed_actions(campaign=campaign, user=request.user)
    if not allowed and (request.method != "POST" or _may_not_edit(campaign, request.user)):
        raise PermissionDenied(
            _("Only the author or an administrator may edit this campaign, and only before it runs.")
        )
    form = CampaignForm(request.POST or None, initial=CampaignForm.initial_from(campaign))
    status_code = 200
    if request.method == "POST" and form.is_valid():
        was, was_exercise, was_operators = campaign.status, campaign.exercise, campaign.operator_slugs
        try:
            services.campaign_update(
                campaign=campaign,
                actor=request.user,
                data=form.service_fields(),
                expected_hash=form.cleaned_data["loaded_hash"] or None,
            )
        except ServiceError as error:
            form.add_error(None, service_error_message(error))
            if isinstance(error, ServiceConflict):
                status_code = 409
                # Saving again is a deliberate choice to replace the version now stored.
                form.data = form.data.copy()
                form.data["loaded_hash"] = services.campaign_content_hash(campaign)
        else:
            if was in services.APPROVED_STATUSES and campaign.status == Status.DRAFT:
                messages.warning(request, _("The content changed, so the approval was voided. Submit it again."))
            else:
                messages.success(request, _("Changes saved."))
            if was_exercise and not campaign.exercise:
                # Made targeted, the form dropped the flag it has no field for: the drill is now a real send.
                messages.warning(
                    request,
                    _("It is no longer an exercise: a targeted campaign reaches real subscribers on every operator."),
                )
            elif was_operators and not campaign.operator_slugs:
                # Made targeted, the form dropped the operators it has no field for: it now reaches them all.
                messages.warning(
                    request,
                    _(
                        "It is no longer limited to some operators: "
                        "a targeted campaign reaches subscribers on every operator."
                    ),
                )
            return redirect("campaigns:detail", pk=campaign.pk)
    return _compose(request, form, campaign=campaign, status=status_code)


def _may_not_edit(campaign: Campaign, user) -> bool:
    """Return whether the user may not edit this campaign whatever its state (not its author nor an admin)."""
    try:
        services.campaign_check_actor("update", campaign=campaign, user=user)
    except ServiceForbidden:
        return True
    return False


def _compose(request: HttpRequest, form: CampaignForm, *, campaign: Campaign | None, status: int = 200) -> HttpResponse:
    codes = form.data.getlist("area_codes") if form.is_bound else form.initial.get("area_codes", [])
    picked = list(Area.objects.filter(code__in=codes).select_related("parent"))
    labels = {
        "replace": _("Replace with"),
        "space": _("a space"),
        "line_break": _("a line break"),
        "no_replacement": _("no GSM-7 replacement; the message stays UCS-2"),
        "part": _("Part"),
        # The page's script picks one by the count; Indonesian says both alike.
        "parts_one": ngettext("%(n)s SMS part", "%(n)s SMS parts", 1),
        "parts_other": ngettext("%(n)s SMS part", "%(n)s SMS parts", 2),
        "too_long": _("Too long: more than 10 SMS parts."),
        "character": _("character %(n)s"),
        "hidden_kinds": {kind: str(label) for kind, label in HIDDEN_KIND_LABELS.items()},
    }
    return render(
        request,
        "campaigns/compose.html",
        {
            "form": form,
            "campaign": campaign,
            "picked": picked,
            "counter_labels": json.dumps(labels),
            "zone": target_zone(sorted(codes), campaign.polygon if campaign else None),
            **_sender_length(form["sender"].value() or ""),
        },
        status=status,
    )


def _sender_length(sender: str) -> dict:
    """Return whether handsets would show the sender ID cut short, for the pages' warning."""
    return {
        "sender_long": bool(services.sender_warning(sender.strip())),
        "sender_shown_length": services.SENDER_SHOWN_LENGTH,
    }


@require_GET
@role_required(Role.OFFICER, Role.ADMIN)
def area_search(request: HttpRequest) -> HttpResponse:
    """Return areas matching a name or code (up to 20), or the children of `parent`, as checkboxes for the form.

    A user with a jurisdiction is offered only the areas within it.
    """
    query = request.GET.get("area_q", "").strip()[:100]
    parent = request.GET.get("parent", "").strip()[:13]
    areas = []
    # The results show names and codes: their boundaries (a province's is hundreds of kilobytes) are left unread.
    listed = Area.objects.select_related("parent").defer("boundary", "parent__boundary")
    jurisdiction = request.user.jurisdiction_code
    if jurisdiction:
        # Only what the user may target: a neighbour such as Kota Blitar, ticked beside Kabupaten Blitar, is refused.
        listed = listed.filter(area_subtree_q("code", [jurisdiction]))
    if parent:
        # Browsing the tree: the areas directly below the chosen one.
        areas = list(listed.filter(parent_id=parent).order_by("code")[:200])
    elif len(query) >= 2:
        matches = listed
        if query[0].isdigit():
            matches = matches.filter(code__startswith=query)
        else:
            matches = matches.filter(search_name__contains=area_search_key(query))
        # Larger areas first (a province's code is shorter than its regencies'), then by code.
        areas = list(matches.order_by(Length("code"), "code")[:AREA_SEARCH_LIMIT])
    return render(request, "campaigns/_area_results.html", {"areas": areas, "query": query or parent})


def _edited_target(request: HttpRequest) -> dict:
    """Return the drawn polygon, audience filters, operators and exercise flag of the campaign being edited.

    The form has no field for any of them and an edit keeps them, so the preview counts them as the run will.
    """
    pk = request.POST.get("campaign", "")
    kept = ("polygon", "audience", "operator_slugs", "exercise")
    edited = selectors.campaigns_visible(request.user)
    row = (edited.filter(pk=int(pk)).values(*kept).first() if pk.isdigit() else None) or {}
    return {
        "polygon": row.get("polygon"),
        "audience": row.get("audience") or {},
        "operator_slugs": row.get("operator_slugs") or [],
        "exercise": bool(row.get("exercise")),
    }


@require_POST
@role_required(Role.OFFICER, Role.ADMIN)
def compose_preview(request: HttpRequest) -> HttpResponse:
    """Return the map and the campaign page's figures for the areas and text being composed.

    A targeted send shows its audience per operator and cost; an area broadcast its operators, exercise flag and
    estimated reach.
    """
    # As many areas as a campaign may target, so that the audience and cost are those of the campaign saved.
    codes = [code for code in request.POST.getlist("area_codes") if isinstance(code, str)][: services.MAX_AREA_CODES]
    areas = list(Area.objects.filter(code__in=codes).order_by("code"))
    # An unsaved campaign carries what is being composed into the same selectors the campaign page uses.
    mode = request.POST.get("mode", "")
    draft = Campaign(
        area_codes=[area.code for area in areas],
        # A line break submitted as CR LF is saved as LF (CampaignForm.clean_text), and counted so here.
        text=request.POST.get("text", "").replace("\r\n", "\n"),
        mode=mode,
        **_edited_target(request),
    )
    # An area broadcast is sent by the operators' cells, not as SMS to subscribers: no subscriber count or SMS cost.
    broadcast = mode == Mode.AREA_BROADCAST
    return render(
        request,
        "campaigns/_preview.html",
        {
            "areas": areas,
            "map_svg": boundary_svg([(area.name, area.boundary) for area in areas], title=_("Map of the chosen areas")),
            "campaign": draft,
            "audience": None if broadcast else selectors.campaign_audience(draft),
            # Its figures are for one run; a recurring campaign spends them again at every occurrence.
            "recurring": scheduling.is_recurring({"kind": request.POST.get("schedule_kind", "")}),
            "broadcast_plan": _broadcast_plan(draft) if broadcast else None,
            "mode": mode,
            "estimate": _broadcast_estimate(draft),
            # Swapped into the compose form's "times in" labels: the zone the times will be read in.
            "zone": target_zone(draft.area_codes, draft.polygon),
        },
    )


RUNS_SHOWN = 10
HISTORY_SHOWN = selectors.HISTORY_SHOWN


def _broadcast_estimate(campaign: Campaign) -> dict | None:
    """Return the handsets an area broadcast is estimated to reach, or None for a targeted campaign."""
    return broadcast_estimate(campaign) if campaign.mode == Mode.AREA_BROADCAST else None


# --- campaign page -------------------------------------------------------------------------


@role_required(*STAFF_ROLES)
def campaign_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Show a campaign: content, analysis, audience, history, runs with live progress, actions."""
    campaign = get_object_or_404(selectors.campaign_list(request.user), pk=pk)
    actions = services.campaign_allowed_actions(campaign=campaign, user=request.user)
    runs = list(campaign.runs.all()[:RUNS_SHOWN])
    may_dispatch = dispatch.campaign_may_dispatch(campaign=campaign, user=request.user)
    history, history_total = _history(campaign)
    context = _campaign_context(campaign, user=request.user)
    context.update(
        {
            "actions": actions,
            "can_edit": "update" in actions,
            "can_copy": request.user.has_role(Role.OFFICER, Role.ADMIN),
            "runs": list(zip(runs, runs_progress(runs), strict=True)),
            # A recurring campaign gathers a run a day: the page shows the latest, the rest are counted.
            "runs_total": len(runs) if len(runs) < RUNS_SHOWN else campaign.runs.count(),
            # A run whose recipients the retention policy removed lists none in the report; its figures remain.
            "recipients_kept": campaign.runs.filter(summary__isnull=True).exists(),
            "history": history,
            "history_total": history_total,
            "confirm_form": ConfirmForm(),
            # An area broadcast is with the operators for its whole window: it can be cancelled, not paused.
            "can_pause": campaign.status == Status.SENDING and campaign.mode == Mode.TARGETED and may_dispatch,
            "can_resume": campaign.status == Status.PAUSED and may_dispatch,
            "can_schedule": campaign.status == Status.APPROVED and may_dispatch,
            "can_review": campaign.status == Status.PENDING_APPROVAL and request.user.has_role(Role.APPROVER),
            # The CAP export (campaigns/cap.py) writes only what an approval covers, or a cancel of it.
            "can_export_cap": cap_exportable(campaign),
            # What the approval covers and the officer checks before submitting; a broadcast's window says it above.
            "schedule_text": [] if campaign.mode == Mode.AREA_BROADCAST else _schedule_lines(campaign),
        }
    )
    return render(request, "campaigns/detail.html", context)


@require_GET
@role_required(*STAFF_ROLES)
def campaign_state_poll(request: HttpRequest, pk: int) -> HttpResponse:
    """Answer the poll of a campaign page: reload it (HX-Refresh) once the campaign left the state it shows.

    A scheduled campaign starts on its own; the page waiting for it then shows the run and its live progress.
    A recurring campaign may start its next occurrence while still sending the run shown (`run`, the latest
    one the page lists): the page reloads to show the new run too.
    """
    campaign = get_object_or_404(selectors.campaigns_visible(request.user).only("status"), pk=pk)
    response = HttpResponse(status=204)
    shown_run = request.GET.get("run")
    latest_run = campaign.runs.order_by("-scheduled_for", "-id").values_list("pk", flat=True).first()
    if campaign.status != request.GET.get("shown") or (shown_run is not None and shown_run != str(latest_run or "")):
        response["HX-Refresh"] = "true"
    return response


def _campaign_context(campaign: Campaign, *, user) -> dict:
    try:
        analysis = analyze(campaign.text)
    except TextError:
        analysis = None
    # What a page would show as nothing or as another character is marked where it stands, and listed.
    hidden_chars = hidden_characters(campaign.text) if analysis else []
    areas = list(Area.objects.filter(code__in=campaign.area_codes or []))
    shapes = [(area.name, area.boundary) for area in areas]
    if campaign.polygon:
        # A drawn polygon is part of the target the approval binds, so it is drawn with the chosen areas.
        shapes.append((_("Drawn area"), campaign.polygon))
    broadcast = campaign.mode == Mode.AREA_BROADCAST
    return {
        "campaign": campaign,
        "analysis": analysis,
        "shown_parts": sms_parts_marked(campaign.text, analysis.parts, hidden_chars) if analysis else [],
        "hidden_chars": hidden_chars,
        "link_hosts": international_hosts(campaign.text) if analysis else [],
        "areas": areas,
        "map_svg": boundary_svg(shapes, title=_("Map of the chosen areas")),
        # An area broadcast reaches handsets, not subscribers, and spends no SMS: its operators and reach instead.
        "audience": None if broadcast else selectors.campaign_audience(campaign),
        # The audience and cost are those of one run: a recurring campaign spends them again at every occurrence.
        "recurring": scheduling.is_recurring(campaign.schedule or {}),
        "broadcast_plan": _broadcast_plan(campaign) if broadcast else None,
        "estimate": _broadcast_estimate(campaign),
        "zone": campaign_zone(campaign),
        "content_hash": services.campaign_content_hash(campaign),
        "cap_source": selectors.campaign_cap_source(campaign, user=user),
        **_sender_length(campaign.sender),
    }


def _broadcast_plan(campaign: Campaign) -> dict:
    """Return the operators an area broadcast goes to, and any it names that would not receive it."""
    operators = broadcast_operators(campaign)
    sent_to = {operator.slug for operator in operators}
    return {
        "every_active": not campaign.operator_slugs,
        "operators": operators,
        # Deactivated since, unknown, or (for an exercise) without a test endpoint.
        "left_out": sorted(set(campaign.operator_slugs or []) - sent_to),
    }


def _history(campaign: Campaign) -> tuple[list, int]:
    """Return the latest events of the campaign and its runs, oldest first, and how many there are in all.

    A recurring campaign adds a handful of events a day, so the page shows the latest HISTORY_SHOWN.
    """
    run_ids = [str(pk) for pk in campaign.runs.values_list("pk", flat=True)]
    events = AuditEvent.objects.filter(
        Q(object_type=Campaign._meta.label_lower, object_id=str(campaign.pk))
        | Q(object_type=CampaignRun._meta.label_lower, object_id__in=run_ids)
    )
    latest = list(events.select_related("actor").order_by("-at", "-id")[:HISTORY_SHOWN])
    total = len(latest) if len(latest) < HISTORY_SHOWN else events.count()
    return latest[::-1], total


@require_POST
@role_required(*STAFF_ROLES)
def campaign_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """Submit, cancel, schedule, pause or resume a campaign through its service."""
    campaign = get_object_or_404(selectors.campaigns_visible(request.user), pk=pk)
    handlers = {
        "submit": (lambda: services.campaign_submit(campaign=campaign, actor=request.user), False),
        "cancel": (lambda: services.campaign_cancel(campaign=campaign, actor=request.user), True),
        # Starting the schedule sends (at once, for a campaign sent as soon as approved): ticked, as a pause is.
        "schedule": (lambda: dispatch.campaign_schedule_approved(campaign=campaign, user=request.user), True),
        "pause": (lambda: dispatch.campaign_pause(campaign=campaign, actor=request.user), True),
        "resume": (lambda: dispatch.campaign_resume(campaign=campaign, actor=request.user), True),
    }
    if action not in handlers:
        raise Http404
    call, needs_confirm = handlers[action]
    if needs_confirm and not ConfirmForm(request.POST).is_valid():
        messages.error(request, _("Tick the confirmation box first; nothing was changed."))
        return redirect("campaigns:detail", pk=campaign.pk)
    try:
        call()
    except ServiceError as error:
        if isinstance(error, ServiceForbidden):
            raise PermissionDenied(service_error_message(error)) from None
        messages.error(request, service_error_message(error, action))
    else:
        messages.success(request, ACTION_DONE[action]())
    return redirect("campaigns:detail", pk=campaign.pk)


ACTION_DONE = {
    "submit": lambda: _("Submitted. The approver has been asked to review it."),
    "cancel": lambda: _("Campaign cancelled. Nothing more will be sent."),
    "schedule": lambda: _("Scheduled. It will run at the times shown."),
    "pause": lambda: _("Paused. No new batch leaves until you resume."),
    "resume": lambda: _("Resumed."),
}


# --- approval ------------------------------------------------------------------------------


@role_required(Role.APPROVER)
def campaign_review(request: HttpRequest, pk: int) -> HttpResponse:
    """Show the approver exactly what will be sent, and take the decision bound to the content hash."""
    campaign = get_object_or_404(selectors.campaign_list(request.user), pk=pk)
    if campaign.author_id == request.user.pk or services.campaign_edited_by(campaign=campaign, user=request.user):
        raise PermissionDenied(_("You wrote this campaign; another approver must decide on it."))
    approve_form = ApproveForm(initial={"content_hash": services.campaign_content_hash(campaign)})
    reject_form = RejectForm(initial={"content_hash": services.campaign_content_hash(campaign)})
    status_code = 200
    if request.method == "POST":
        decision = request.POST.get("decision")
        try:
            if decision == "approve":
                approve_form = ApproveForm(request.POST)
                if approve_form.is_valid():
                    services.campaign_approve(
                        campaign=campaign, approver=request.user, content_hash=approve_form.cleaned_data["content_hash"]
                    )
                    messages.success(request, _("Approved. The officer can now schedule it."))
                    return redirect("campaigns:detail", pk=campaign.pk)
                if list(approve_form.errors) == ["confirm"]:
                    messages.error(request, _("Tick the confirmation box first; nothing was approved."))
                else:
                    messages.error(
                        request, _("The form was incomplete, so nothing was approved. Reload the page and try again.")
                    )
            elif decision == "reject":
                reject_form = RejectForm(request.POST)
                if reject_form.is_valid():
                    stale = reject_form.cleaned_data.get("content_hash")
                    if stale and stale != services.campaign_content_hash(campaign):
                        raise ServiceConflict("The campaign changed since you reviewed it.")
                    services.campaign_reject(
                        campaign=campaign, approver=request.user, reason=reject_form.cleaned_data["reason"]
                    )
                    messages.success(request, _("Rejected. The officer sees your reason."))
                    return redirect("campaigns:detail", pk=campaign.pk)
            else:
                messages.error(request, _("Choose approve or reject."))
            status_code = 400
        except ServiceError as error:
            if isinstance(error, ServiceForbidden):
                raise PermissionDenied(service_error_message(error)) from None
            messages.error(request, service_error_message(error, decision))
            campaign.refresh_from_db()
            fresh = services.campaign_content_hash(campaign)
            approve_form = ApproveForm(initial={"content_hash": fresh})
            reject_form = RejectForm(initial={"content_hash": fresh, "reason": request.POST.get("reason", "")})
            status_code = 400 if isinstance(error, ServiceInvalid) else 409
    context = _campaign_context(campaign, user=request.user)
    context.update(
        {
            "approve_form": approve_form,
            "reject_form": reject_form,
            "can_decide": campaign.status == Status.PENDING_APPROVAL,
            "diff": _diff_against_rejection(campaign),
            "schedule_text": _schedule_lines(campaign),
            "also_approved": _also_approved(campaign),
        }
    )
    return render(request, "campaigns/review.html", context, status=status_code)


def _also_approved(campaign: Campaign) -> list[tuple[str, str]]:
    """Return the hashed fields the rest of the review page does not show, as (label, value) in words.

    How long operators keep trying to deliver a targeted SMS travels with each batch, and the instruction and
    alert fields head the CAP alert an approved campaign is exported as: the approval covers them too.
    """
    fields = ["validity_minutes"] if campaign.mode == Mode.TARGETED else []
    fields.append("cap_category")
    fields += [
        field
        for field in ("cap_event", "cap_urgency", "cap_severity", "cap_certainty", "instruction")
        if getattr(campaign, field)
    ]
    return [(FIELD_LABELS[field], _snapshot_value(field, getattr(campaign, field), campaign, {})) for field in fields]


def _diff_against_rejection(campaign: Campaign) -> dict | None:
    """Return the lines changed since the last rejected version, or None if it was never rejected."""
    rejection = (
        Approval.objects.filter(campaign=campaign, decision=Approval.Decision.REJECTED).order_by("-created_at").first()
    )
    if rejection is None:
        return None
    current = {"title": campaign.title, **services.campaign_content(campaign)}
    before, after = _snapshot_lines(rejection.snapshot, campaign), _snapshot_lines(current, campaign)
    lines = []
    for line in difflib.unified_diff(before, after, lineterm="", n=2):
        if line.startswith(("---", "+++", "@@")):
            continue
        kind = "add" if line.startswith("+") else "del" if line.startswith("-") else ""
        # Marked as the message is, so that a line changed only by a zero-width character shows what changed.
        # The first character is the diff's own "+", "-" or " ".
        lines.append((kind, escape(line[:1]) + marked(line[1:])))
    return {"rejection": rejection, "lines": lines}


def _snapshot_lines(snapshot: dict, campaign: Campaign) -> list[str]:
    """Return a version's content as "label: value" lines in the user's language, in the compose form's order."""
    order = {field: index for index, field in enumerate(FIELD_LABELS)}
    names = dict(Area.objects.filter(code__in=snapshot.get("area_codes") or []).values_list("code", "name"))
    lines = []
    for field in sorted(snapshot, key=lambda name: (order.get(name, len(order)), name)):
        label, value = FIELD_LABELS.get(field, field), snapshot[field]
        if field in ("text", "instruction") and isinstance(value, str) and value:
            lines += [f"{label}: {line}" for line in value.splitlines()]
        else:
            lines.append(f"{label}: {_snapshot_value(field, value, campaign, names)}")
    return lines


def _snapshot_value(field: str, value, campaign: Campaign, area_names: dict[str, str]) -> str:
    """Return one field of a version as the review page shows it: local times, durations, names."""
    from smsblast.templatetags.ui import local_time, status_label

    if field == "schedule" and isinstance(value, dict):  # no schedule is "now"
        return " ".join(str(line) for line in _schedule_words(campaign, value))
    if value in (None, "", [], {}):
        return "—"
    if field in ("starts_at", "ends_at"):
        try:
            return local_time(datetime.fromisoformat(value), campaign_zone(campaign))
        except (TypeError, ValueError):
            return str(value)
    if field == "validity_minutes" and isinstance(value, int):
        return _duration(value)
    if field == "exercise":
        return _("yes") if value else _("no")
    if field == "area_codes":
        return ", ".join(f"{area_names[code]} ({code})" if code in area_names else code for code in value)
    if field in ("mode", "priority", "repeat_policy"):
        return status_label(value)
    if field in CAP_VALUE_LABELS:
        label = str(CAP_VALUE_LABELS[field].get(value, value))
        return value if label == value else f"{label} ({value})"
    if field == "audience" and isinstance(value, dict):
        parts = []
        if value.get("languages"):
            parts.append(f"{_('Only subscribers whose language is')}: {', '.join(value['languages'])}")
        if value.get("operators"):
            parts.append(f"{_('Only subscribers of the operators')}: {', '.join(value['operators'])}")
        return " · ".join(parts) or "—"
    if field == "polygon" and isinstance(value, dict):
        # Every corner of every ring, so that a moved corner shows as a change: "lat, lon" as maps write them.
        polygons = value.get("coordinates") or []
        polygons = [polygons] if value.get("type") == "Polygon" else polygons
        rings = [ring for polygon in polygons for ring in polygon]
        return " | ".join("; ".join(f"{point[1]}, {point[0]}" for point in ring) for ring in rings) or "—"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _duration(minutes: int) -> str:
    """Return a number of minutes as days, hours and minutes: "1 hari 2 jam"; "0 menit" for none."""
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = [
        ngettext("%(count)s day", "%(count)s days", days) % {"count": days} if days else "",
        ngettext("%(count)s hour", "%(count)s hours", hours) % {"count": hours} if hours else "",
        ngettext("%(count)s minute", "%(count)s minutes", mins) % {"count": mins} if mins or not minutes else "",
    ]
    return " ".join(part for part in parts if part)


def _as_written(value, layout: str) -> str:
    """Return a schedule's ISO date or local date-time as people write it in the page's language."""
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return str(value or "")
    return dateformat.format(moment, layout)


def _schedule_lines(campaign: Campaign) -> list[str]:
    """Return the schedule in words, in the area's zone."""
    schedule = campaign.schedule or {}
    zone = campaign_zone(campaign)
    if campaign.mode == Mode.AREA_BROADCAST:
        # Its window is its schedule: submit refuses any other (see operators.broadcasts).
        from smsblast.templatetags.ui import local_time, status_label

        return [
            _("Broadcast window: %(starts)s – %(ends)s, %(repeat)s.")
            % {
                "starts": local_time(campaign.starts_at, zone),
                "ends": local_time(campaign.ends_at, zone),
                "repeat": status_label(campaign.repeat_policy),
            }
        ]
    return _schedule_words(campaign, schedule)


def _schedule_words(campaign: Campaign, schedule: dict) -> list[str]:
    """Return a schedule (the campaign's or an earlier version's) in words, in the campaign's zone."""
    zone = campaign_zone(campaign)
    kind = schedule.get("kind", "now")
    # In full, as a sentence reads them ("Pada hari Jumat"); the form's boxes keep the short names.
    weekdays = [str(WEEKDAYS[day]) for day in range(7)]
    lines = []
    if kind == "now":
        lines.append(_("Once, as soon as it is scheduled after approval."))
    elif kind == "once":
        lines.append(
            _("Once, at %(at)s %(zone)s.") % {"at": _as_written(schedule.get("at"), "j M Y H:i"), "zone": zone.label}
        )
    elif kind == "daily":
        lines.append(_("Every day at %(time)s %(zone)s.") % {"time": schedule.get("time"), "zone": zone.label})
        for day, at in (schedule.get("weekday_times") or {}).items():
            lines.append(_("On %(day)s at %(time)s instead.") % {"day": weekdays[int(day)], "time": at})
    elif kind == "weekly":
        days = ", ".join(weekdays[int(day)] for day in schedule.get("weekdays", []))
        lines.append(
            _("On %(days)s at %(time)s %(zone)s.") % {"days": days, "time": schedule.get("time"), "zone": zone.label}
        )
    if schedule.get("until"):
        lines.append(_("Until %(date)s.") % {"date": _as_written(schedule["until"], "j M Y")})
    quiet = schedule.get("quiet_hours")
    if quiet:
        # Kept in the local time of every zone the campaign reaches: "21:00–06:00 WIB/WIT".
        zones = "/".join(quiet_zone.label for quiet_zone in campaign_zones(campaign))
        lines.append(
            _("Quiet hours %(start)s–%(end)s %(zone)s (normal priority waits them out).")
            % {"start": quiet["start"], "end": quiet["end"], "zone": zones}
        )
    return lines


# --- progress ------------------------------------------------------------------------------


@role_required(*STAFF_ROLES)
def run_progress_partial(request: HttpRequest, pk: int, run_pk: int) -> HttpResponse:
    """Return one run's progress block; htmx polls it every 2 s until the run is final."""
    campaign = get_object_or_404(selectors.campaigns_visible(request.user), pk=pk)
    run = get_object_or_404(CampaignRun, pk=run_pk, campaign=campaign)
    run.campaign = campaign
    zone = campaign_zone(campaign)
    if campaign.mode == Mode.AREA_BROADCAST:
        # Operators send to handsets in the area and report how many they reached; there are no deliveries.
        progress = broadcast_run_reach(run)
        # A cancelled run is watched until every operator confirmed the cancel (or the window's end closed it).
        progress["done"] = run.status in CampaignRun.FINAL_STATUSES and (
            run.status != CampaignRun.Status.CANCELLED
            or all(operator["state"] in AreaBroadcast.FINAL_STATES for operator in progress["operators"])
        )
        template, context = "campaigns/_broadcast_run.html", {}
    else:
        block = run_progress_block(run)
        # A cancelled run's messages already with an operator are still reported on, or expire: it is watched,
        # as a run under way, until each of them is final.
        progress = {**block["progress"], "done": block["progress"]["done"] and not block["progress"]["pending"]}
        chart = _delivery_chart(block, zone)
        template, context = "campaigns/_run.html", {"chart": chart, "failures": block["failures"]}
    context.update({"run": run, "progress": progress, "campaign": campaign, "zone": zone})
    response = render(request, template, context)
    if progress["done"] and request.htmx and request.htmx.trigger == f"run-{run.pk}":
        # The run ended while the page polled it: reload it so the campaign's state, actions and history follow.
        response["HX-Refresh"] = "true"
    return response


def _delivery_chart(block: dict, zone: scheduling.Zone) -> dict | None:
    """Return an SVG of cumulative deliveries over time per operator, with its legend, from run_progress_block.

    Its times are given in `zone`, the one the page gives the run's in (a campaign drawn only as a polygon has no
    area code to take it from).
    """
    first, last = block["first"], block["last"]
    if first is None:
        return None
    series: dict[str, list] = defaultdict(list)
    running: dict[str, int] = defaultdict(int)
    start = first.replace(microsecond=0)
    for key, slot, n in block["delivered"]:
        running[key] += n
        series[key].append(((slot - start).total_seconds(), running[key]))
    if not series:
        return None
    from smsblast.templatetags.ui import local_time, thousands

    svg = line_chart_svg(
        series,
        title=_("Deliveries over time per operator"),
        x_labels=(local_time(first, zone), local_time(last, zone)),
        y_format=thousands,
    )
    return {"svg": svg, "legend": series_colours(series).items()}
