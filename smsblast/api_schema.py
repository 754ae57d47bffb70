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


ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {"type": "string", "description": "What is wrong, in words."},
        "errors": {"type": "object", "additionalProperties": {}, "description": "Per field, when input was refused."},
    },
    "required": ["detail"],
}
# Answers any operation may give, with what they mean; each carries an Error body.
ERROR_DESCRIPTIONS = {
    "400": "Invalid input",
    "401": "No credentials, or an invalid or revoked token",
    "403": "The caller's role may not do this (or, with a session, the CSRF token is missing)",
    "404": "No such object, or none the caller may see (a campaign outside their jurisdiction)",
    "409": "Not possible in the object's current state",
    "413": "The request body is larger than accepted",
    "415": "The body's Content-Type is not one the operation reads",
    "503": "The database cannot answer at the moment: send the same request again after Retry-After seconds",
}
RETRY_AFTER_HEADER = {
    "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before sending the request again."}
}
# What the API's parsers read (JSON, forms): a body of another type is refused with 415 before the view sees it.
PARSED_MEDIA_TYPES = {"application/json", "application/x-www-form-urlencoded", "multipart/form-data"}


def document_errors(result: dict, **kwargs) -> dict:
    """Document the error answers of every operation: each is JSON with a `detail` (see `smsblast.api`).

    Every endpoint needs credentials and a role (401, 403) and may find the database unable to answer (503, with
    Retry-After); one naming an object can miss it (404); a body can be refused (400), too large (413) or of a type
    no parser reads (415), a query too (400); a write on an object can meet it in the wrong state (409).
    Error answers a view documents keep their description and get the same body.
    """
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            codes = {"401", "403", "503"}
            if "{" in path:
                codes.add("404")
            if "requestBody" in operation:
                codes |= {"400", "413"}
                if set(operation["requestBody"]["content"]) <= PARSED_MEDIA_TYPES:
                    codes.add("415")
            if any(parameter.get("in") == "query" for parameter in operation.get("parameters", [])):
                codes.add("400")
            if method in ("post", "put", "patch") and "{" in path:
                codes.add("409")
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses.setdefault(code, {"description": ERROR_DESCRIPTIONS[code]})
            responses["503"].setdefault("headers", RETRY_AFTER_HEADER)
            for code, response in responses.items():
                if int(code) >= 400:
                    response.setdefault("description", ERROR_DESCRIPTIONS.get(code, "Error"))
                    response["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            operation["responses"] = dict(sorted(responses.items()))
    return result
