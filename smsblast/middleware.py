"""Request middleware of the pages and the API."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import BadRequest, PermissionDenied, RequestDataTooBig, TooManyFieldsSent
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render, resolve_url
from django.urls import Resolver404, resolve, reverse
from django.utils.translation import gettext as _
from django_htmx.http import HttpResponseClientRedirect

from smsblast.two_factor import session_lacks_second_factor


class IndonesianByDefaultMiddleware:
    """Make Bahasa Indonesia the default whatever language the browser asks for.

    Office PCs often run an English browser; the UI should still open in Indonesian and switch to English
    only when the user picks it (the language cookie set by /i18n/setlang/). Dropping Accept-Language before
    LocaleMiddleware leaves the cookie, then LANGUAGE_CODE, to decide. API clients are programs that say
    what they want: under /api/ their Accept-Language still counts.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith("/api/"):
            request.META.pop("HTTP_ACCEPT_LANGUAGE", None)
        return self.get_response(request)


def declared_body_length(request) -> int:
    """Return the body length the request declares (Content-Length), 0 when it declares none or nonsense."""
    try:
        return max(0, int(request.META.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


# The URLs that take a subscriber file (the page, the API and the admin): only they accept a body of its size.
SUBSCRIBER_UPLOAD_URL_NAMES = frozenset({"subscribers", "subscriber-import-list", "smsblast_subscriber_import"})
# Room for a multipart form's boundaries and part headers around the fields DATA_UPLOAD_MAX_MEMORY_SIZE counts.
MULTIPART_ALLOWANCE = 64 * 1024


def body_limit(request) -> int:
    """Return the largest body the request accepts: a subscriber file and its form where one is uploaded (on a page,
    only from a user who may upload one), else a form or document."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE + MULTIPART_ALLOWANCE
    if _url_name(request) not in SUBSCRIBER_UPLOAD_URL_NAMES:
        return limit
    # The API reads a body only once its caller is let in; a page reads its form before (for a NUL, for the CSRF
    # token), so there the session must be of an uploader, or anyone could have a file's worth written to disk.
    if request.path.startswith("/api/") or _session_may_upload_subscribers(request):
        return limit + settings.SUBSCRIBER_IMPORT_MAX_BYTES
    return limit


def _url_name(request) -> str | None:
    try:
        return resolve(request.path_info).url_name
    except Resolver404:
        return None


def _session_user(request):
    """Return the user the request's session cookie is a log-in of (AnonymousUser if none), read once."""
    if not hasattr(request, "_session_user"):
        request._session_user = _session_user_read(request.COOKIES.get(settings.SESSION_COOKIE_NAME))
    return request._session_user


def _session_user_read(key: str | None):
    """Return the user the session `key` is a log-in of, checked as django.contrib.auth.get_user checks it (a
    password changed since ends it) but changing nothing: the session and authentication middleware, which come
    later, read the session again and act on it (renew it, end it) where the browser learns of it."""
    from importlib import import_module

    from django.contrib import auth
    from django.contrib.auth.models import AnonymousUser
    from django.core.exceptions import ValidationError
    from django.utils.crypto import constant_time_compare

    # A key holding a NUL is no session and cannot be looked up (RefuseNulMiddleware, later, refuses the request).
    if not key or "\x00" in key:
        return AnonymousUser()
    session = import_module(settings.SESSION_ENGINE).SessionStore(key)
    try:
        user_id = auth.get_user_model()._meta.pk.to_python(session[auth.SESSION_KEY])
        backend_path = session[auth.BACKEND_SESSION_KEY]
    except (KeyError, ValidationError):
        return AnonymousUser()
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return AnonymousUser()
    user = auth.load_backend(backend_path).get_user(user_id)
    if user is None:
        return AnonymousUser()
    stored = session.get(auth.HASH_SESSION_KEY) or ""
    known = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    return user if any(constant_time_compare(stored, each) for each in known) else AnonymousUser()


def _session_may_upload_subscribers(request) -> bool:
    """Return whether the request's session is a log-in of a user who may import subscribers."""
    from smsblast.models import Role

    user = _session_user(request)
    return user.is_authenticated and user.has_role(Role.OFFICER, Role.ADMIN)


def _refused_uploader(request):
    """Answer a subscriber file posted to its page by someone who may not upload one, as the page would, unread:
    the log-in for a visitor (the admin's for its page), the 403 page for a user of another role."""
    if _url_name(request) == "smsblast_subscriber_import" or not _session_user(request).is_authenticated:
        login_url = reverse("admin:login") if request.path.startswith("/admin/") else settings.LOGIN_URL
        return redirect_to_login(request.get_full_path(), login_url)
    raise PermissionDenied(_("Your role may not open this page."))


class RefuseOversizedBodyMiddleware:
    """Answer 413, without reading it, to a request body larger than the URL accepts.

    Django writes a multipart upload to a temporary file before any view can weigh it (the CSRF check of a page
    reads the form even for an anonymous client), so a body of gigabytes would fill the disk before the import
    refused it, and a body the size of a subscriber file sent to any other URL would be written out for nothing.
    A subscriber file (SUBSCRIBER_IMPORT_MAX_BYTES) with its form is accepted where one is uploaded (on a page, from
    an officer's or an admin's session only); elsewhere a body up to DATA_UPLOAD_MAX_MEMORY_SIZE with a form's
    framing. API clients get `detail` in JSON; pages get a page saying so. A chunked body, whose length Django never
    learns, gets 411.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower() and not request.META.get(
            "CONTENT_LENGTH"
        ):
            # A WSGI server hands Django a chunked body without its length, and Django reads such a body as empty:
            # the view would answer about fields "missing" from a body the client did send.
            detail = "Send the body with a Content-Length header: a chunked body is not read."
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": detail}, status=411)
            return HttpResponse(detail, status=411, content_type="text/plain; charset=utf-8")
        length = declared_body_length(request)
        if not length:
            return self.get_response(request)
        limit = body_limit(request)
        if length <= limit:
            return self.get_response(request)
        if request.path.startswith("/api/"):
            detail = f"The request body is {length:,} bytes, more than the {limit:,} accepted."
            return JsonResponse({"detail": detail}, status=413)
        if _url_name(request) in SUBSCRIBER_UPLOAD_URL_NAMES and length <= limit + settings.SUBSCRIBER_IMPORT_MAX_BYTES:
            return _refused_uploader(request)
        # The figure a person can act on: the largest file, not the file and its form together.
        largest = settings.SUBSCRIBER_IMPORT_MAX_BYTES if limit > settings.SUBSCRIBER_IMPORT_MAX_BYTES else limit
        return render(request, "413.html", {"limit_mb": max(1, largest // 2**20)}, status=413)


class RefuseNulMiddleware:
    """Answer 400 to a request whose path, query, form fields or cookies hold a NUL character.

    PostgreSQL cannot compare text with NUL in it, so such a value reaching a query fails with a 500 (the session
    cookie is looked up on every request). No area code, search, form value or cookie legitimately holds one. API
    clients get `detail` in JSON; pages get the 400 page.
    """

    message = "The request contains a NUL character."

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            has_nul = self._has_nul(request)
        except (RequestDataTooBig, TooManyFieldsSent) as exc:
            # Reading the form here meets Django's limits before DRF can answer them: API clients still get JSON.
            if not request.path.startswith("/api/"):
                raise
            if isinstance(exc, RequestDataTooBig):
                detail = f"The request body is larger than the {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes accepted."
                return JsonResponse({"detail": detail}, status=413)
            detail = f"Send at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields in the query and the form."
            return JsonResponse({"detail": detail}, status=400)
        if has_nul:
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": self.message}, status=400)
            raise BadRequest(self.message)
        return self.get_response(request)

    @staticmethod
    def _has_nul(request) -> bool:
        if "\x00" in request.path:
            return True
        if any("\x00" in name or "\x00" in value for name, value in request.COOKIES.items()):
            return True
        fields = [request.GET]
        # Pages post forms either way; CSRF reads their fields anyway. API bodies are left to DRF's parsers.
        form_types = {"application/x-www-form-urlencoded"}
        if not request.path.startswith("/api/"):
            form_types.add("multipart/form-data")
        if request.method == "POST" and request.content_type in form_types:
            fields.append(request.POST)
        return any(
            "\x00" in key or "\x00" in value for query in fields for key, values in query.lists() for value in values
        )


class HtmxLoginRedirectMiddleware:
    """Send the whole window to the login page when an htmx request finds the session ended.

    A poll or a partial (run progress, compose preview, area search) would otherwise follow the login
    redirect and swap the login page into the block it updates. htmx is told to load it as a page instead,
    with the page the user was on, not the partial, as where to return after logging in.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not getattr(request, "htmx", False) or response.status_code != 302:
            return response
        login_url = resolve_url(settings.LOGIN_URL)
        if not response["Location"].split("?")[0] == login_url:
            return response
        back_to = request.htmx.current_url_abs_path or request.get_full_path()
        return HttpResponseClientRedirect(redirect_to_login(back_to, login_url)["Location"])


class ContentSecurityPolicyMiddleware:
    """Send settings.CONTENT_SECURITY_POLICY with every answer that sets none of its own.

    The browser then runs only scripts served by this site: text an officer, an operator or an imported alert
    smuggled into a page stays inert even if escaping were ever missed. Templates hold no inline script or event
    handler (a test keeps it so); styles may be inline, as progress bars set their width in the markup.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        policy = settings.CONTENT_SECURITY_POLICY
        if policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy
        return response


class TwoFactorSessionMiddleware:
    """Log out a session opened with the password alone whose user's role now asks for a code (two_factor).

    Such a user logs in again, with the code, before any page or session-authenticated API call answers: the role
    was given while logged in, or the setting named it after the log-in. API tokens are not sessions: unaffected.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if session_lacks_second_factor(request):
            logout(request)
            if not request.path.startswith("/api/"):
                messages.info(
                    request, _("Your account now asks for a code from an authenticator app after the password.")
                )
        return self.get_response(request)


class ApiNotFoundJsonMiddleware:
    """Answer an unknown /api/ path in JSON also under DEBUG (`make run`), where Django renders its HTML debug page
    instead of calling handler404; a 404 a view already answered in JSON passes unchanged."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        html = response.get("Content-Type", "").startswith("text/html")
        if response.status_code == 404 and html and request.path.startswith("/api/"):
            from smsblast.api import not_found  # the API module imports DRF, which reads settings at import

            return not_found(request)
        return response
