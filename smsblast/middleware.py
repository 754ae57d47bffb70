"""Request middleware of the pages."""

from django.core.exceptions import BadRequest
from django.http import JsonResponse


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


class RefuseNulMiddleware:
    """Answer 400 to a request whose path, query or form fields hold a NUL character.

    PostgreSQL cannot compare text with NUL in it, so such a value reaching a query fails with a 500.
    No area code, search or form value legitimately holds one. API clients get `detail` in JSON; pages
    get the 400 page.
    """

    message = "The request contains a NUL character."

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if self._has_nul(request):
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": self.message}, status=400)
            raise BadRequest(self.message)
        return self.get_response(request)

    @staticmethod
    def _has_nul(request) -> bool:
        if "\x00" in request.path:
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
