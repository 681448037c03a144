"""``/docs``: the OpenAPI document as one self-contained HTML page.

Generated from the document (:mod:`raftdb.http.openapi`), so it lists what
``/openapi.json`` lists, nothing written twice. No scripts, no CDN: the page
works on a machine without internet access.
"""

from __future__ import annotations

import html
from typing import Any, Final

__all__ = ["docs_html"]

_METHODS: Final = ("get", "put", "post", "delete")
_STYLE: Final = """
body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#222}
h1{margin-bottom:0}code,td.path{font-family:ui-monospace,monospace}
section{border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:.5rem 1rem}
.m{display:inline-block;min-width:4.5rem;font-weight:700;font-family:ui-monospace,monospace}
.get{color:#0a6}.put{color:#a60}.post{color:#06a}.delete{color:#c22}
table{border-collapse:collapse;margin:.3rem 0}td,th{padding:.15rem .6rem;text-align:left;
vertical-align:top;border-bottom:1px solid #eee}th{font-weight:600}
"""


def _md(text: str) -> str:
    """Escape ``text`` for HTML, rendering `code` spans."""
    parts = html.escape(text).split("`")
    return "".join(
        f"<code>{part}</code>" if odd else part
        for odd, part in ((i % 2 == 1, p) for i, p in enumerate(parts))
    )


def _schema_name(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if schema.get("type") == "array":
        return f"list of {_schema_name(schema.get('items', {}))}"
    return str(schema.get("type", ""))


def docs_html(schema: dict[str, Any]) -> str:
    """A self-contained HTML page listing every operation of ``schema``."""
    info = schema["info"]
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{html.escape(info['title'])} API</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(info['title'])} API</h1>",
        f"<p>{_md(info['description'])}</p>",
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI '
        f"{html.escape(schema['openapi'])}).</p>",
    ]
    for tag in schema["tags"]:
        out.append(f"<h2>{html.escape(tag['name'])}</h2><p>{_md(tag['description'])}</p>")
        for path, item in schema["paths"].items():
            for method in _METHODS:
                operation = item.get(method)
                if operation is None or tag["name"] not in operation.get("tags", ()):
                    continue
                out.append(
                    f'<section id="{html.escape(operation["operationId"])}">'
                    f'<p><span class="m {method}">{method.upper()}</span>'
                    f"<code>{html.escape(path)}</code> — {_md(operation['summary'])}</p>"
                )
                params = operation.get("parameters", [])
                if params:
                    out.append("<table><tr><th>parameter</th><th>in</th><th>meaning</th></tr>")
                    for param in params:
                        out.append(
                            f"<tr><td><code>{html.escape(param['name'])}</code></td>"
                            f"<td>{html.escape(param['in'])}</td>"
                            f"<td>{_md(param.get('description', ''))}</td></tr>"
                        )
                    out.append("</table>")
                body = operation.get("requestBody")
                if body:
                    kinds = ", ".join(
                        f"{kind} ({_schema_name(media.get('schema', {}))})"
                        for kind, media in body["content"].items()
                    )
                    out.append(
                        f"<p>Body: {_md(body.get('description', ''))} <code>"
                        f"{html.escape(kinds)}</code></p>"
                    )
                out.append("<table><tr><th>status</th><th>meaning</th></tr>")
                for status, response in operation["responses"].items():
                    out.append(
                        f"<tr><td>{html.escape(status)}</td>"
                        f"<td>{_md(response['description'])}</td></tr>"
                    )
                out.append("</table></section>")
    out.append("<h2>Schemas</h2>")
    for name, component in schema["components"]["schemas"].items():
        fields = ", ".join(
            f"<code>{html.escape(field)}</code>" for field in component.get("properties", {})
        )
        out.append(f"<p><b>{html.escape(name)}</b>: {fields}</p>")
    out.append("</body></html>")
    return "\n".join(out)
