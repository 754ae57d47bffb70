"""Log-in steps, subscriber and operator pages; writes go through smsblast.services and smsblast.two_factor."""

from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.views import LoginView
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render, resolve_url
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters

from campaigns.models import DispatchBatch
from campaigns.views import role_required
from operators.models import Operator
from smsblast import importer, selectors, services, totp, two_factor
from smsblast.errors import ServiceConflict, ServiceError
from smsblast.forms import OptInForm, OptOutForm, SubscriberImportForm, SubscriberSearchForm, TwoFactorCodeForm
from smsblast.models import Role, SubscriberImport
from smsblast.templatetags.ui import status_label

# Operator health is judged on the batches of this recent window.
HEALTH_WINDOW = timedelta(minutes=15)
THROUGHPUT_WINDOW = timedelta(minutes=5)
# Consecutive failed batches after which an operator is treated as unreachable (circuit open).
CIRCUIT_OPEN_AFTER = 5
# The search and opt-out forms both have a number field; distinct ids keep each label on its own field.
OPTOUT_AUTO_ID = "id_optout_%s"


class TwoFactorLoginView(LoginView):
    """The password step: logs the user in, or, for a role that gives a second factor, hands over to the code step."""

    def get(self, request, *args, **kwargs):
        # Back at the password ("Log in as someone else"): a code step left unfinished ends, so that whoever uses the
        # browser next cannot give its code, or set up an app, for the one who left.
        two_factor.pending_login_clear(request)
        return super().get(request, *args, **kwargs)

    def form_valid(self, form):
        user = form.get_user()
        self.user_logging_in = user
        if not two_factor.two_factor_required(user):
            return super().form_valid(form)
        two_factor.pending_login_start(request=self.request, user=user, redirect_to=self.get_success_url())
        if two_factor.two_factor_device(user) is None:
            return redirect("login_enrol")
        return redirect("login_code")

    def get_success_url(self):
        url = super().get_success_url()
        user = getattr(self, "user_logging_in", None)
        api_only = user is not None and user.has_role(Role.OPERATOR)
        if api_only and not user.has_role(Role.OFFICER, Role.APPROVER, Role.ADMIN):
            # An operator identity has no pages: the dashboard would answer it with a refusal, while the API's
            # documentation is what its session is for.
            if url == resolve_url(settings.LOGIN_REDIRECT_URL):
                return reverse("swagger-ui")
        return url


@never_cache
def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin site's log-in page (as AdminSite.login), with the second factor of the log-in page."""
    site = admin.site
    if request.method == "GET" and site.has_permission(request):
        return redirect("admin:index")
    context = {
        **site.each_context(request),
        "title": _("Log in"),
        "subtitle": None,
        "app_path": request.get_full_path(),
        "username": request.user.get_username(),
    }
    if REDIRECT_FIELD_NAME not in request.GET and REDIRECT_FIELD_NAME not in request.POST:
        context[REDIRECT_FIELD_NAME] = reverse("admin:index", current_app=site.name)
    request.current_app = site.name
    view = TwoFactorLoginView.as_view(
        extra_context=context, authentication_form=site.login_form, template_name="admin/login.html"
    )
    return view(request)


def _pending_or_restart(request: HttpRequest):
    """Return the pending log-in, or the redirect to the log-in page (with why) when there is none to finish."""
    pending = two_factor.pending_login(request)
    if pending is None:
        messages.info(request, _("Log in with your username and password first."))
        return None, redirect("login")
    if pending.user is None:
        messages.error(
            request,
            _("The time to enter the code ran out (%(minutes)d minutes). Log in again with your password.")
            % {"minutes": settings.TWO_FACTOR_PENDING_SECONDS // 60},
        )
        return None, redirect("login")
    return pending, None


@sensitive_post_parameters("code")
@csrf_protect
@never_cache
def login_code(request: HttpRequest) -> HttpResponse:
    """The code step: a right code of the user's authenticator app completes the log-in."""
    pending, restart = _pending_or_restart(request)
    if restart:
        return restart
    if two_factor.two_factor_device(pending.user) is None:
        return redirect("login_enrol")
    form = TwoFactorCodeForm(request.POST or None, request=request, user=pending.user)
    if request.method == "POST" and form.is_valid():
        two_factor.pending_login_complete(request=request, pending=pending)
        # The URL LoginView checked, followed as LoginView follows it: not looked up as a URL name.
        return HttpResponseRedirect(pending.redirect_to)
    return render(request, "registration/login_code.html", {"form": form})


@sensitive_post_parameters("code")
@csrf_protect
@never_cache
def login_enrol(request: HttpRequest) -> HttpResponse:
    """The first log-in of a user who gives a second factor: set up an authenticator app, confirmed by a code."""
    pending, restart = _pending_or_restart(request)
    if restart:
        return restart
    if two_factor.two_factor_device(pending.user) is not None:
        return redirect("login_code")
    secret = two_factor.pending_login_secret(request)
    form = TwoFactorCodeForm(request.POST or None, request=request, user=pending.user, secret=secret)
    if request.method == "POST" and form.is_valid():
        two_factor.pending_login_complete(request=request, pending=pending)
        messages.success(request, _("Your authenticator app is set up. Log-ins from now on ask for its code."))
        return HttpResponseRedirect(pending.redirect_to)
    uri = two_factor.enrolment_uri(user=pending.user, secret=secret)
    context = {
        "form": form,
        "secret_grouped": totp.secret_grouped(secret),
        "uri": uri,
        "qr_svg": totp.qr_svg(uri, label=_("QR code to add smsblast to an authenticator app")),
    }
    return render(request, "registration/login_enrol.html", context)


def _upload_refusal(error: ServiceError) -> str:
    """Return why an upload was refused and what to do, in the user's language."""
    code = getattr(error, "errors", {}).get("file", "")
    reasons = {
        "too_large": _("The file is larger than an upload may be. Split it into smaller files and upload each."),
        "empty": _("The file is empty."),
        "workbook": _("This is a spreadsheet workbook, not a CSV file."),
        "not_text": _("This is not a CSV text file."),
        "not_utf8": _("The file is not UTF-8 text."),
        "no_number_column": _("The file has no phone number column.")
        + " "
        + _("Name it one of: %(names)s.") % {"names": ", ".join(importer.COLUMN_ALIASES["number"][:5])},
        "no_rows": _("The file has a header row but no data."),
        "header_too_long": _("The file's first line is longer than a header can be: it is not a list of numbers."),
    }
    if code == "not_stored":
        return _(
            "The server could not store the file (its disk may be full or not writable). Try again later; if it "
            "happens again, ask an administrator."
        )
    if code == "too_large":
        return reasons[code]
    if code in reasons:
        return reasons[code] + " " + _("Save it as CSV (UTF-8) with a number column and upload it again.")
    return _("This file cannot be imported: %(reason)s Check that it is a CSV with a number column.") % {
        "reason": str(error)
    }


@role_required(Role.OFFICER, Role.ADMIN)
def subscribers(request: HttpRequest) -> HttpResponse:
    """Import a CSV, search a number, opt a number out, or back in from its search result."""

    import_form = SubscriberImportForm()
    optout_form = OptOutForm(auto_id=OPTOUT_AUTO_ID)
    search_form = SubscriberSearchForm(request.GET or None)
    if request.method == "POST":
        if request.POST.get("form") == "import":
            import_form = SubscriberImportForm(request.POST, request.FILES)
            if import_form.is_valid():
                try:
                    job = services.subscriber_import_create(
                        uploaded_file=import_form.cleaned_data["file"], user=request.user
                    )
                except ServiceError as error:
                    import_form.add_error("file", _upload_refusal(error))
                else:
                    messages.success(request, _("File received. The import runs in the background."))
                    return redirect("subscriber_import", pk=job.pk)
        elif request.POST.get("form") == "optout":
            optout_form = OptOutForm(request.POST, auto_id=OPTOUT_AUTO_ID)
            if optout_form.is_valid():
                try:
                    subscriber, changed = services.subscriber_opt_out(
                        msisdn=optout_form.cleaned_data["msisdn"], actor=request.user, source="web"
                    )
                except ServiceError:
                    optout_form.add_error("msisdn", _("This is not a valid Indonesian mobile number."))
                else:
                    if subscriber is None:  # an officer limited to a jurisdiction, and a number not homed in it
                        optout_form.add_error("msisdn", _("This number is not registered in your jurisdiction."))
                    else:
                        if changed:
                            messages.success(request, _("The number is opted out and will not receive campaigns."))
                        else:
                            messages.info(request, _("This number was already opted out."))
                        return redirect("subscribers")
        elif request.POST.get("form") == "optin":
            return _subscriber_opt_in(request, OptInForm(request.POST))
    subscribers = selectors.subscribers_visible(request.user)
    found = None
    if search_form.is_bound and search_form.is_valid():
        found = list(subscribers.filter(msisdn=search_form.cleaned_data["msisdn"]).select_related("area", "operator"))
    return render(
        request,
        "smsblast/subscribers.html",
        {
            "import_form": import_form,
            "optout_form": optout_form,
            "search_form": search_form,
            "found": found,
            "imports": selectors.subscriber_imports_visible(request.user)[:10],
            "total": subscribers.count(),
            "opted_out": subscribers.filter(opted_out_at__isnull=False).count(),
            "jurisdiction": request.user.jurisdiction if selectors.subscriber_jurisdiction(request.user) else None,
        },
    )


def _subscriber_opt_in(request: HttpRequest, form: OptInForm) -> HttpResponse:
    """Opt a search result's number back in, say how it went and show the number again."""
    if not form.is_valid():
        messages.error(request, _("This is not a valid Indonesian mobile number."))
        return redirect("subscribers")
    msisdn = form.cleaned_data["msisdn"]
    try:
        subscriber, changed = services.subscriber_opt_in(msisdn=msisdn, actor=request.user, source="web")
    except ServiceConflict:
        messages.error(
            request,
            _("This number opted out by SMS: only the subscriber can opt it back in, by sending START or REG."),
        )
    else:
        if subscriber is None:  # an officer limited to a jurisdiction, and a number not homed in it
            messages.error(request, _("This number is not registered in your jurisdiction."))
        elif changed:
            messages.success(request, _("The number receives campaigns again."))
        else:
            messages.info(request, _("This number was not opted out."))
    return redirect(f"{reverse('subscribers')}?{urlencode({'msisdn': msisdn})}")


@role_required(Role.OFFICER, Role.ADMIN)
def subscriber_import_status(request: HttpRequest, pk: int) -> HttpResponse:
    """Show one import's progress (htmx polls it until done), its rejected rows with reasons and its repeats."""
    job = get_object_or_404(selectors.subscriber_imports_visible(request.user), pk=pk)
    template = "smsblast/_import.html" if request.htmx else "smsblast/import.html"
    context = {
        "job": job,
        "rejections": list(job.rejections.all()[:100]),
        # Rows listed in the rejected file: every rejected one and every repeat of a number.
        "listed": job.rejected + job.duplicates,
        "percent": _import_percent(job),
        "stalled": selectors.subscriber_import_is_stalled(job),
    }
    return render(request, template, context)


@role_required(Role.OFFICER, Role.ADMIN)
def subscriber_import_resume(request: HttpRequest, pk: int) -> HttpResponse:
    """Resume a failed, stopped or stalled import from its last committed chunk (POST), then show its progress."""
    job = get_object_or_404(selectors.subscriber_imports_visible(request.user), pk=pk)
    if request.method != "POST":
        return redirect("subscriber_import", pk=job.pk)
    try:
        services.subscriber_import_resume(subscriber_import=job, actor=request.user)
    except ServiceError:
        job.refresh_from_db()
        if job.state != SubscriberImport.State.COMPLETED and not Path(job.file_path).is_file():
            messages.error(request, _("The file of this import is no longer kept; upload it again."))
        elif job.lines_done and services.subscriber_import_file_changed(subscriber_import=job):
            messages.error(
                request,
                _(
                    "The file of this import changed since the import began: resuming would skip rows of the "
                    "changed file. Import it again as a new file."
                ),
            )
        else:
            messages.error(
                request,
                _("Only a failed or stopped import can be resumed; this one is %(state)s.")
                % {"state": status_label(job.state)},
            )
    else:
        messages.success(request, _("The import continues after line %(line)s.") % {"line": job.lines_done})
    return redirect("subscriber_import", pk=job.pk)


@role_required(Role.OFFICER, Role.ADMIN)
def subscriber_import_stop(request: HttpRequest, pk: int) -> HttpResponse:
    """Stop a pending or running import (POST), keeping the rows saved so far, then show it."""
    job = get_object_or_404(selectors.subscriber_imports_visible(request.user), pk=pk)
    if request.method != "POST":
        return redirect("subscriber_import", pk=job.pk)
    try:
        services.subscriber_import_stop(subscriber_import=job, actor=request.user)
    except ServiceError:
        messages.error(
            request,
            _("Only a pending or running import can be stopped; this one is %(state)s.")
            % {"state": status_label(job.state)},
        )
    else:
        messages.success(request, _("The import is stopped. The rows saved before stay; resuming goes on from there."))
    return redirect("subscriber_import", pk=job.pk)


def _import_percent(job: SubscriberImport) -> int:
    if job.state == SubscriberImport.State.COMPLETED:
        return 100
    if not job.file_size:
        return 0
    return min(99, int(100 * job.bytes_read / job.file_size))


@role_required(Role.ADMIN)
def operators(request: HttpRequest) -> HttpResponse:
    """Show each operator's limits, tariff, health derived from recent batches, last error and throughput."""
    now = timezone.now()
    rows = [operator_health(operator, now=now) for operator in Operator.objects.all()]
    return render(request, "smsblast/operators.html", {"rows": rows})


def operator_health(operator: Operator, *, now) -> dict:
    """Return the operator's state (healthy, throttled, failing, circuit_open, idle) and recent throughput."""
    recent = DispatchBatch.objects.filter(operator=operator, updated_at__gte=now - HEALTH_WINDOW)
    counts = dict(recent.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    last_errors = list(
        DispatchBatch.objects.filter(operator=operator)
        .exclude(last_error="")
        # A batch we cancelled keeps why ("The campaign was cancelled."): our doing, not the operator's error.
        .exclude(status=DispatchBatch.Status.CANCELLED)
        .order_by("-updated_at")
        .values_list("last_error", "updated_at")[:1]
    )
    latest = list(
        DispatchBatch.objects.filter(operator=operator, status__in=DispatchBatch.FINAL_STATUSES)
        .order_by("-updated_at")
        .values_list("status", flat=True)[:CIRCUIT_OPEN_AFTER]
    )
    # Waiting because the operator last answered 429 (slow down): its error starts with the status, as
    # operators.services._error_text writes it. Words within the operator's text ("generate", "separate", an id
    # holding 429) say nothing of throttling.
    throttled = recent.filter(status=DispatchBatch.Status.RETRY_WAIT, last_error__startswith="HTTP 429")
    if len(latest) == CIRCUIT_OPEN_AFTER and all(status == DispatchBatch.Status.FAILED for status in latest):
        state = "circuit_open"
    elif throttled.exists():
        state = "throttled"
    elif counts.get(DispatchBatch.Status.FAILED) or counts.get(DispatchBatch.Status.RETRY_WAIT):
        state = "failing"
    elif counts:
        state = "healthy"
    else:
        state = "idle"
    # Accepting sets updated_at with accepted_at, and a later change moves it on: the recent-batches index finds them.
    accepted = DispatchBatch.objects.filter(
        operator=operator,
        status=DispatchBatch.Status.ACCEPTED,
        updated_at__gte=now - THROUGHPUT_WINDOW,
        accepted_at__gte=now - THROUGHPUT_WINDOW,
    ).aggregate(segments=Sum("segments"), recipients=Sum("accepted_count"))
    seconds = THROUGHPUT_WINDOW.total_seconds()
    return {
        "operator": operator,
        "state": state,
        "batches": counts,
        "last_error": last_errors[0] if last_errors else None,
        "segments_per_second": round((accepted["segments"] or 0) / seconds, 1),
        "recipients_per_minute": round((accepted["recipients"] or 0) / (seconds / 60)),
    }
