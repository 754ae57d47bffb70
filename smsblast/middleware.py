"""Request middleware of the pages."""


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
