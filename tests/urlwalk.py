"""Walk the URL configuration for the jurisdiction tests: every page and API path of a kind, and who asks."""

from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient


def url_patterns_under(segment: str) -> list[tuple[str, set[str]]]:
    """Return (namespaced URL name, its parameters) of every named page and API path whose route holds `segment`."""
    found = []

    def walk(patterns, namespace):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, pattern.namespace or namespace)
            elif isinstance(pattern, URLPattern) and pattern.name and segment in str(pattern.pattern):
                name = f"{namespace}:{pattern.name}" if namespace else pattern.name
                found.append((name, set(pattern.pattern.regex.groupindex)))

    walk(get_resolver().url_patterns, None)
    return found


def signed_in(user, path: str) -> APIClient:
    """Return a client signed in as `user`: by token for an API path, by session for a page."""
    client = APIClient()
    if path.startswith("/api/"):
        client.force_authenticate(user)
    else:
        client.force_login(user)
    return client
