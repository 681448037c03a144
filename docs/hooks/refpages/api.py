"""The REST API reference page, from the node's own OpenAPI document.

The document is :func:`raftdb.http.openapi.openapi_schema` as a node with a
``tokens_file`` serves it at ``/openapi.json`` (with the ``bearer`` scheme and
the ``401``/``403`` answers), so the page says what the route modules declare
beside their routes; nothing here is a second copy. The token role each
operation needs comes from the table the node checks requests against
(:func:`raftdb.http.auth.access_of`), and the error codes from the error classes
the API raises. ``docs/api.md`` is the guide, with examples.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from raftdb.http.auth import access_of, describe_security
from raftdb.http.openapi import openapi_schema
from raftdb.node.errors import NodeError
from refpages.md import anchor, cell, code, table
from refpages.roles import roles_as_code

__all__ = ["PATH", "document", "error_classes", "operations", "page"]

#: Where the page is in the site.
PATH = "reference/api.md"

_METHODS = ("get", "head", "put", "post", "patch", "delete")
_REF = "#/components/schemas/"


def document() -> dict[str, Any]:
    """The OpenAPI document of a node with a ``tokens_file`` (limits at their defaults)."""
    doc = openapi_schema()
    describe_security(doc, public_status=False)
    return doc


def operations(doc: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every ``(method, path, operation)`` of ``doc``, in the document's order."""
    for path, item in doc["paths"].items():
        for method in _METHODS:
            if method in item:
                yield method, path, item[method]


def schema_anchor(name: str) -> str:
    """The anchor of component schema ``name`` on the page."""
    return "schema-" + anchor(name)


def _ref_name(schema: Mapping[str, Any]) -> str | None:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF):
        return ref[len(_REF) :]
    return None


def _bounds(schema: Mapping[str, Any]) -> list[str]:
    """The constraints of a scalar schema, as short phrases."""
    notes: list[str] = []
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        notes.append(f"{low} to {high}")
    elif low is not None:
        notes.append(f"≥ {low}")
    elif high is not None:
        notes.append(f"≤ {high}")
    for bound, word, noun in (
        ("minLength", "at least", "character"),
        ("maxLength", "at most", "character"),
        ("maxItems", "at most", "item"),
    ):
        if bound in schema:
            count = schema[bound]
            notes.append(f"{word} {count} {noun}{'' if count == 1 else 's'}")
    if schema.get("contentEncoding") == "base64":
        notes.append("base64")
    if schema.get("format") == "binary":
        notes.append("bytes")
    if "pattern" in schema:
        notes.append("matching " + code(schema["pattern"]))
    if "enum" in schema:
        notes.append("one of " + ", ".join(code(json.dumps(v)) for v in schema["enum"]))
    if "default" in schema:
        notes.append("default " + code(json.dumps(schema["default"])))
    return notes


def type_text(schema: Mapping[str, Any]) -> str:
    """A schema in a few words, with links to the component schemas it names."""
    name = _ref_name(schema)
    if name is not None:
        return f"[{name}](#{schema_anchor(name)})"
    kind = schema.get("type")
    for combiner in ("oneOf", "anyOf"):
        # A typed schema whose variants refine it (an event's shapes) is shown whole below.
        if combiner in schema and kind is None and "properties" not in schema:
            return " or ".join(type_text(part) for part in schema[combiner])
    if isinstance(kind, list):
        kind = " or ".join(str(k) for k in kind)
    if kind == "array":
        items = schema.get("items")
        text = "array of " + (type_text(items) if isinstance(items, Mapping) else "anything")
        notes = _bounds(schema)
        return text + (f" ({', '.join(notes)})" if notes else "")
    if kind == "object" and "additionalProperties" in schema and "properties" not in schema:
        extra = schema["additionalProperties"]
        if isinstance(extra, Mapping):
            return "object of " + type_text(extra)
    text = str(kind) if kind else "any"
    notes = _bounds(schema)
    return text + (f" ({', '.join(notes)})" if notes else "")


def _is_simple(schema: Mapping[str, Any]) -> bool:
    """Whether :func:`type_text` says all of ``schema`` (else the page shows it whole)."""
    if _ref_name(schema) is not None:
        return True
    if "properties" in schema or "contentSchema" in schema:
        return False
    for combiner in ("oneOf", "anyOf", "allOf"):
        if combiner in schema:
            return all(_is_simple(part) for part in schema[combiner])
    items = schema.get("items")
    return not isinstance(items, Mapping) or _is_simple(items)


def _schema_block(schema: Mapping[str, Any], title: str) -> list[str]:
    """A collapsed block holding ``schema`` as JSON, for what a table cannot say."""
    body = json.dumps(schema, indent=2, ensure_ascii=False)
    return [
        f'??? note "{title}"',
        "",
        "    ```json",
        *("    " + line for line in body.splitlines()),
        "    ```",
        "",
    ]


def _access(method: str, path: str) -> str:
    closed = access_of(method.upper(), path, public_status=False).role
    opened = access_of(method.upper(), path, public_status=True).role
    if closed is None:
        return "open: no token, even with a `tokens_file`"
    text = f"a token with role {code(closed.label)}"
    if opened is None:
        text += " (none while `public_status` is on, the default)"
    return text + ", when the node has a `tokens_file`"


def _parameters(operation: Mapping[str, Any]) -> list[str]:
    rows = []
    for param in operation.get("parameters", []):
        rows.append(
            [
                code(param["name"]),
                param["in"],
                type_text(param.get("schema", {})),
                "yes" if param.get("required") else "no",
                cell(param.get("description", "")),
            ]
        )
    if not rows:
        return []
    return [
        "**Parameters**",
        "",
        table(["name", "in", "type", "required", "description"], rows),
    ]


def _content_rows(content: Mapping[str, Any], where: str) -> tuple[str, list[str]]:
    """What a body holds (``media type: type``), and the blocks of its complex schemas."""
    parts: list[str] = []
    blocks: list[str] = []
    for media, about in content.items():
        schema = about.get("schema", {})
        parts.append(f"{code(media)}: {type_text(schema)}")
        if not _is_simple(schema):
            blocks.extend(["", *_schema_block(schema, f"{where}, {media}")])
    return "; ".join(parts), blocks


def _request_body(operation: Mapping[str, Any]) -> list[str]:
    body = operation.get("requestBody")
    if not body:
        return []
    content, blocks = _content_rows(body.get("content", {}), "Request body")
    required = "required" if body.get("required") else "optional"
    description = body.get("description", "")
    return [f"**Request body** ({required}): {content}. {description}".rstrip(), *blocks, ""]


def _responses(operation: Mapping[str, Any]) -> list[str]:
    rows = []
    blocks: list[str] = []
    for status, response in sorted(operation["responses"].items()):
        content, more = _content_rows(response.get("content", {}), f"Answer {status}")
        blocks.extend(more)
        headers = ", ".join(
            f"{code(name)} ({cell(about.get('description', ''))})"
            for name, about in response.get("headers", {}).items()
        )
        rows.append([f"**{status}**", cell(response.get("description", "")), content, headers])
    return [
        "**Responses**",
        "",
        table(["status", "meaning", "body", "headers"], rows),
        *blocks,
    ]


def _operation(method: str, path: str, operation: Mapping[str, Any]) -> list[str]:
    lines = [
        f"### {code(method.upper() + ' ' + path)} {{ #{operation['operationId']} }}",
        "",
        f"**{operation.get('summary', '').rstrip('.')}.** {operation.get('description', '')}",
        "",
        f"Needs: {_access(method, path)}.",
        "",
        *_parameters(operation),
        *_request_body(operation),
        *_responses(operation),
        "",
    ]
    return lines


def _schema_section(name: str, schema: Mapping[str, Any]) -> list[str]:
    lines = [f"### {name} {{ #{schema_anchor(name)} }}", ""]
    if schema.get("description"):
        lines += [schema["description"], ""]
    required = set(schema.get("required", []))
    rows = [
        [
            code(field),
            type_text(about),
            "yes" if field in required else "no",
            cell(about.get("description", "")),
        ]
        for field, about in schema.get("properties", {}).items()
    ]
    if rows:
        lines.append(table(["field", "type", "required", "description"], rows))
    if schema.get("additionalProperties") is False:
        lines += ["No other field is accepted.", ""]
    return lines


def error_classes() -> list[type[NodeError]]:
    """Every error class the API answers with: its ``code`` and ``status``, by status."""
    import raftdb.http.app  # noqa: F401 - imports every module that defines an error class

    found: dict[str, type[NodeError]] = {}
    pending: list[type[NodeError]] = [NodeError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        found.setdefault(f"{cls.status} {cls.code}", cls)
    return [found[name] for name in sorted(found)]


def _errors_section() -> list[str]:
    rows = []
    for cls in error_classes():
        summary = roles_as_code((cls.__doc__ or "").strip().split("\n\n")[0])
        rows.append([f"**{cls.status}**", code(cls.code), cell(summary)])
    return [
        "## Error codes { #error-codes }",
        "",
        'Every error answer is JSON `{"error": "<code>", "message": "<what and why>"}` '
        "(schema [Error](#schema-error)). The codes, from the error classes the API raises "
        "(`raftdb.node.errors`, `raftdb.http.errors`); the guide's "
        "[error table](../api.md#errors) says when each happens:",
        "",
        table(["status", "`error`", "what it means"], rows),
    ]


def page(doc: Mapping[str, Any] | None = None) -> str:
    """The page's Markdown: the operations by tag, the error codes, the component schemas."""
    doc = document() if doc is None else doc
    info = doc["info"]
    lines = [
        "# REST API reference",
        "",
        "Generated when the site is built from the OpenAPI document a node serves at "
        "`/openapi.json` (and as a page at `/docs`), here as a node with a `tokens_file` "
        "describes itself. The [API guide](../api.md) explains the API with examples.",
        "",
        info.get("description", ""),
        "",
        f"OpenAPI {doc['openapi']}, API version {info['version']}.",
        "",
    ]
    tags = [tag["name"] for tag in doc.get("tags", [])]
    about = {tag["name"]: tag.get("description", "") for tag in doc.get("tags", [])}
    grouped: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for method, path, operation in operations(doc):
        # Under its first known tag only, so that every operation (and anchor) is there once.
        tag = next((t for t in operation.get("tags", []) if t in about), "")
        grouped.setdefault(tag, []).append((method, path, operation))
    for tag in [*tags, ""]:
        if tag not in grouped:
            continue
        title = f"{tag}: {about[tag].rstrip('.')}" if tag else "Other operations"
        lines += [f"## {title}", ""]
        for method, path, operation in grouped[tag]:
            lines += _operation(method, path, operation)
    lines += _errors_section()
    lines += ["## Schemas", ""]
    for name, schema in doc.get("components", {}).get("schemas", {}).items():
        lines += _schema_section(name, schema)
    return "\n".join(lines) + "\n"
