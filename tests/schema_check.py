"""Compare an API answer with what the OpenAPI schema documents for it, field by field."""

import uuid
from datetime import date

import jsonschema
from django.utils.dateparse import parse_datetime


def _resolve(schema: dict, node: dict) -> dict:
    """Return the schema object `node` stands for, through a `$ref` or a single `allOf`, keeping `nullable`."""
    nullable = node.get("nullable", False)
    while "$ref" in node or len(node.get("allOf", [])) == 1:
        node = node["allOf"][0] if "allOf" in node else node
        if "$ref" in node:
            node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
        nullable = nullable or node.get("nullable", False)
    return {**node, "nullable": nullable}


def _mismatches(schema: dict, node: dict, value, where: str) -> list[str]:
    node = _resolve(schema, node)
    if value is None:
        return [] if node["nullable"] or "oneOf" in node else [f"{where} is null but not documented as nullable"]
    alternatives = node.get("oneOf") or node.get("anyOf")
    if alternatives:
        # The answer is one of the documented shapes: it must match at least one of them field by field.
        found = [_mismatches(schema, alternative, value, where) for alternative in alternatives]
        return [] if [] in found else min(found, key=len)
    if isinstance(value, dict):
        properties = node.get("properties")
        if properties is None:
            return []  # a free-form object
        found = [f"{where}.{name} is answered but not documented" for name in sorted(set(value) - set(properties))]
        required = set(node.get("required", []))
        found += [
            f"{where}.{name} is documented as required but not answered" for name in sorted(required - set(value))
        ]
        for name in sorted(set(value) & set(properties)):
            found += _mismatches(schema, properties[name], value[name], f"{where}.{name}")
        return found
    if isinstance(value, list):
        if node.get("type") != "array":
            return [f"{where} is a list but documented as {node.get('type')}"]
        return [problem for item in value for problem in _mismatches(schema, node.get("items", {}), item, f"{where}[]")]
    return []


def _documented_body(schema: dict, path: str, method: str, response) -> tuple[str, dict | None, list[str]]:
    """Return where the answer is, the schema of its JSON body (None when it has none to check) and the problems
    with its status and media type."""
    documented = schema["paths"][path][method]["responses"].get(str(response.status_code))
    where = f"{method.upper()} {path} {response.status_code}"
    if documented is None:
        return where, None, [f"{where}: status not documented"]
    content_type = response["Content-Type"].split(";")[0]
    if content_type not in documented.get("content", {}):
        return where, None, [f"{where}: no {content_type} body documented"]
    if content_type != "application/json":
        return where, None, []
    return where, documented["content"][content_type]["schema"], []


def answer_mismatches(schema: dict, path: str, method: str, response) -> list[str]:
    """Return how `response` (to `method` on the schema's `path`) differs from what the schema documents."""
    where, node, problems = _documented_body(schema, path, method, response)
    return problems if node is None else _mismatches(schema, node, response.json(), where)


# A stricter check with jsonschema: types, enums, formats, patterns and bounds too, not only the field names.
FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=(ValueError, OverflowError))
def _is_aware_time(value) -> bool:
    if not isinstance(value, str):
        return True
    moment = parse_datetime(value)
    return moment is not None and moment.tzinfo is not None


@FORMATS.checks("date", raises=ValueError)
def _is_date(value) -> bool:
    return not isinstance(value, str) or bool(date.fromisoformat(value))


@FORMATS.checks("uuid", raises=ValueError)
def _is_uuid(value) -> bool:
    return not isinstance(value, str) or bool(uuid.UUID(value))


@FORMATS.checks("uri")
def _is_url(value) -> bool:
    return not isinstance(value, str) or value.startswith(("http://", "https://"))


def _as_json_schema(node, *, hidden: str):
    """Return an OpenAPI 3.0 schema object as JSON Schema (draft 4).

    `nullable` becomes a null alternative; the properties flagged `hidden` (readOnly in a request, writeOnly in an
    answer) are left out; an object listing its properties is closed, so a field the schema does not name is
    reported instead of passing unnoticed.
    """
    if isinstance(node, list):
        return [_as_json_schema(item, hidden=hidden) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _as_json_schema(value, hidden=hidden) for key, value in node.items() if key != "example"}
    if isinstance(node.get("properties"), dict):
        left_out = {name for name, field in node["properties"].items() if field.get(hidden)}
        node["properties"] = {name: field for name, field in node["properties"].items() if name not in left_out}
        required = [name for name in node.get("required", []) if name not in left_out]
        node.pop("required", None)
        if required:
            node["required"] = required
        node.setdefault("additionalProperties", False)
    if node.pop("nullable", False):
        node = {"anyOf": [node, {"type": "null"}]}
    return node


def _errors(schema: dict, node: dict, value, *, hidden: str, where: str) -> list[str]:
    root = _as_json_schema(node, hidden=hidden)
    root["components"] = {"schemas": _as_json_schema(schema["components"]["schemas"], hidden=hidden)}
    validator = jsonschema.Draft4Validator(root, format_checker=FORMATS)
    return [
        f"{where}: {'/'.join(map(str, error.absolute_path)) or '(body)'}: {error.message[:300]}"
        for error in sorted(validator.iter_errors(value), key=lambda error: list(map(str, error.absolute_path)))
    ]


def answer_errors(schema: dict, path: str, method: str, response) -> list[str]:
    """Return how `response` differs from the schema: status, media type, and the JSON body in every detail."""
    where, node, problems = _documented_body(schema, path, method, response)
    return problems if node is None else _errors(schema, node, response.json(), hidden="writeOnly", where=where)


def request_errors(schema: dict, path: str, method: str, body, media_type: str = "application/json") -> list[str]:
    """Return how a request body differs from the one the schema documents for the operation."""
    where = f"{method.upper()} {path} request"
    content = schema["paths"][path][method].get("requestBody", {}).get("content", {})
    if media_type not in content:
        return [f"{where}: no {media_type} body documented"]
    return _errors(schema, content[media_type]["schema"], body, hidden="readOnly", where=where)
