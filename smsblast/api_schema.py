"""Hooks that shape the OpenAPI schema drf-spectacular builds."""


def drop_trailing_slash_twins(endpoints: list, **kwargs) -> list:
    """Drop an endpoint that only repeats another one with a trailing slash added.

    A file such as a campaign's report.csv is served at its bare name, while the router also routes the same
    action with a slash; listing both would give one view method two operations with the same operationId.
    """
    bare = {(path, method) for path, _, method, _ in endpoints}
    return [
        (path, pattern, method, view)
        for path, pattern, method, view in endpoints
        if not (path.endswith("/") and (path[:-1], method) in bare)
    ]
