"""What is sent, as distinct from what is hashed: OpenAI's own API (backend "openai") gets `max_completion_tokens`
instead of the deprecated `max_tokens`, and structured-output schemas cut down to its strict subset; every other
backend (llama.cpp, vLLM, Ollama) gets the planned request byte for byte. Cache keys are computed from the planned
request (`dermlib.notes.plan`), never from what this module sends, so no key changes; the answer is still
validated against the strategy's full schema (`dermlib.notes.strategies.parse_response`).

OpenAI's strict subset, from its "Structured model outputs" guide, sections "Supported schemas" and "Supported
properties" (https://developers.openai.com/api/docs/guides/structured-outputs; quoted verbatim in
github.com/MervinPraison/PraisonAI#1028): types string, number, boolean, integer, object, array, enum and anyOf;
for strings only `pattern` and `format` (date-time, time, date, duration, email, hostname, ipv4, ipv6, uuid); for
numbers `multipleOf`, `maximum`, `exclusiveMaximum`, `minimum`, `exclusiveMinimum`; for arrays `minItems` and
`maxItems`. Every object must set "additionalProperties": false and list every property in "required"; the root
must be an object, not anyOf. So `minLength`/`maxLength` (M+P2's sections) and `uniqueItems` are outside it.
The guide's size limits (5,000 properties, 10 levels of nesting, 1,000 enum values in all) are checked too.
"""

from __future__ import annotations

import copy
from typing import Any

GENERIC = {"type", "enum", "const", "anyOf", "$ref", "$defs", "definitions", "description"}
BY_TYPE: dict[str, set[str]] = {
    "object": {"properties", "required", "additionalProperties"},
    "array": {"items", "minItems", "maxItems"},
    "string": {"pattern", "format"},
    "number": {"multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum"},
    "integer": {"multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum"},
    "boolean": set(),
    "null": set(),
}
FORMATS = {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
MAX_PROPERTIES, MAX_DEPTH, MAX_ENUM_VALUES = 5000, 10, 1000


def _types(node: dict[str, Any]) -> list[str]:
    kind = node.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def _allowed(node: dict[str, Any]) -> set[str]:
    allowed = set(GENERIC)
    for kind in _types(node):
        allowed |= BY_TYPE.get(kind, set())
    return allowed


def _children(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    """The sub-schemas of a node, with their paths (property names are never read as keywords)."""
    out = [(f"{path}/properties/{k}", v) for k, v in (node.get("properties") or {}).items()]
    out += [(f"{path}/{key}/{k}", v) for key in ("$defs", "definitions") for k, v in (node.get(key) or {}).items()]
    if isinstance(node.get("items"), dict):
        out.append((f"{path}/items", node["items"]))
    out += [(f"{path}/anyOf/{i}", v) for i, v in enumerate(node.get("anyOf") or [])]
    return [(p, v) for p, v in out if isinstance(v, dict)]


def strict_problems(schema: dict[str, Any]) -> list[str]:
    """Why `schema` falls outside OpenAI's strict structured-output subset (empty: it is inside)."""
    problems: list[str] = []
    if "object" not in _types(schema) or "anyOf" in schema:
        problems.append("(root): must be an object, not anyOf")
    counts = {"properties": 0, "enum": 0}

    def visit(node: dict[str, Any], path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            problems.append(f"{path}: nested deeper than {MAX_DEPTH} levels")
        for kind in _types(node):
            if kind not in BY_TYPE:
                problems.append(f"{path}: type {kind!r} is not supported")
        for key in sorted(set(node) - _allowed(node)):
            problems.append(f"{path}: keyword {key!r} is not supported")
        if "format" in node and node["format"] not in FORMATS:
            problems.append(f"{path}: format {node['format']!r} is not supported")
        if "object" in _types(node):
            props = node.get("properties") or {}
            counts["properties"] += len(props)
            if node.get("additionalProperties") is not False:
                problems.append(f"{path}: additionalProperties must be false")
            missing = sorted(set(props) - set(node.get("required") or []))
            if missing:
                problems.append(f"{path}: every property must be required (missing {missing})")
        counts["enum"] += len(node.get("enum") or [])
        for child_path, child in _children(node, path):
            visit(child, child_path, depth + 1)

    visit(schema, "", 1)
    if counts["properties"] > MAX_PROPERTIES:
        problems.append(f"(root): {counts['properties']} properties, over {MAX_PROPERTIES}")
    if counts["enum"] > MAX_ENUM_VALUES:
        problems.append(f"(root): {counts['enum']} enum values, over {MAX_ENUM_VALUES}")
    return problems


def strict_subset(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of `schema` without the keywords outside the strict subset (`minLength`, `uniqueItems`, ...): what
    OpenAI is sent. What the answer must satisfy is still the full schema, checked after the answer arrives."""

    def cut(node: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in node.items() if k in _allowed(node)}
        if isinstance(out.get("properties"), dict):
            out["properties"] = {k: cut(v) for k, v in out["properties"].items()}
        for key in ("$defs", "definitions"):
            if isinstance(out.get(key), dict):
                out[key] = {k: cut(v) for k, v in out[key].items()}
        if isinstance(out.get("items"), dict):
            out["items"] = cut(out["items"])
        if isinstance(out.get("anyOf"), list):
            out["anyOf"] = [cut(v) for v in out["anyOf"]]
        return out

    return cut(copy.deepcopy(schema))


def sent_format(backend: str, response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The response_format to send: for OpenAI's strict json_schema, the schema cut to the strict subset; for every
    other backend the same object, unchanged."""
    if backend != "openai" or not response_format or response_format.get("type") != "json_schema":
        return response_format
    spec = response_format.get("json_schema") or {}
    if not spec.get("strict") or not isinstance(spec.get("schema"), dict):
        return response_format
    return {**response_format, "json_schema": {**spec, "schema": strict_subset(spec["schema"])}}


def sent_params(backend: str, params: dict[str, Any]) -> dict[str, Any]:
    """The sampling parameters to send: OpenAI's own API takes `max_completion_tokens` (`max_tokens` is deprecated
    there, and refused by its reasoning models); llama.cpp, vLLM and Ollama keep `max_tokens`."""
    if backend != "openai" or "max_tokens" not in params:
        return params
    return {("max_completion_tokens" if k == "max_tokens" else k): v for k, v in params.items()}


def answer_token_limit(params: dict[str, Any]) -> int | None:
    """The answer's token bound in sent parameters, whichever name it goes by."""
    value = params.get("max_tokens") or params.get("max_completion_tokens")
    return int(value) if value else None
