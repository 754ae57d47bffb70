"""Compare an API answer with what the OpenAPI schema documents for it, field by field."""


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


def answer_mismatches(schema: dict, path: str, method: str, response) -> list[str]:
    """Return how `response` (to `method` on the schema's `path`) differs from what the schema documents."""
    documented = schema["paths"][path][method]["responses"].get(str(response.status_code))
    where = f"{method.upper()} {path} {response.status_code}"
    if documented is None:
        return [f"{where}: status not documented"]
    content_type = response["Content-Type"].split(";")[0]
    if content_type not in documented.get("content", {}):
        return [f"{where}: no {content_type} body documented"]
    if content_type != "application/json":
        return []
    return _mismatches(schema, documented["content"][content_type]["schema"], response.json(), where)
