"""/v1/docs: the API reference as one HTML page, rendered here from the OpenAPI document.

Render farms are often cut off from the internet (GPU nodes on a private network). This
page needs nothing but the API itself; so does the interactive one at /v1/swagger, whose
code the API serves from the swagger-ui-bundle package (api/swagger.py).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, current_app, render_template_string
from flask_smorest import Api

blp = Blueprint("docs", __name__)

_METHODS = ("get", "post", "put", "patch", "delete")

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ info.title }} API {{ info.version }}</title>
<style>
 body { font: 15px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
        padding: 0 1rem; color: #222; }
 code, .path { font-family: ui-monospace, monospace; }
 h2 { border-bottom: 1px solid #ddd; margin-top: 2.5rem; }
 .op { margin: 1.5rem 0; }
 .method { display: inline-block; min-width: 4rem; font-weight: bold; }
 .get { color: #1a7f37; } .post { color: #0969da; } .delete { color: #cf222e; }
 table { border-collapse: collapse; margin: .4rem 0; }
 td, th { border: 1px solid #ddd; padding: .2rem .5rem; text-align: left;
          vertical-align: top; }
 .muted { color: #666; }
</style></head><body>
<h1>{{ info.title }} API {{ info.version }}</h1>
<p>{{ info.description }}</p>
<p class="muted">Machine-readable: <a href="openapi.json">openapi.json</a>.
 Interactive: <a href="swagger">Swagger UI</a> (served by the API too).
 {% if secured %}Every endpoint but /healthz needs <code>Authorization: Bearer
 &lt;key&gt;</code>.{% endif %}</p>
{% for tag, ops in groups %}
<h2>{{ tag }}</h2>
{% for op in ops %}
<div class="op" id="{{ op.anchor }}">
 <div><span class="method {{ op.method }}">{{ op.method | upper }}</span>
  <span class="path">{{ op.path }}</span></div>
 <div>{{ op.summary }}</div>
 {% if op.description %}<div class="muted">{{ op.description }}</div>{% endif %}
 {% if op.parameters %}<table><tr><th>parameter</th><th>in</th><th>type</th>
  <th>description</th></tr>
  {% for p in op.parameters %}<tr><td><code>{{ p.name }}</code>{% if p.required %} *
  {% endif %}</td><td>{{ p.in }}</td><td>{{ p.type | safe }}</td><td>{{ p.description }}</td>
  </tr>{% endfor %}</table>{% endif %}
 {% if op.body %}<div>Body: {{ op.body | safe }}</div>{% endif %}
 <table><tr><th>status</th><th>reply</th></tr>
  {% for r in op.responses %}<tr><td>{{ r.status }}</td><td>{{ r.description }}
  {% if r.schema %} &mdash; {{ r.schema | safe }}{% endif %}</td></tr>{% endfor %}</table>
</div>
{% endfor %}{% endfor %}
<h2>Schemas</h2>
{% for name, fields in schemas %}
<h3 id="schema-{{ name }}">{{ name }}</h3>
<table><tr><th>field</th><th>type</th><th>default</th><th>description</th></tr>
{% for f in fields %}<tr><td><code>{{ f.name }}</code>{% if f.required %} *{% endif %}</td>
 <td>{{ f.type | safe }}</td><td>{{ f.default }}</td><td>{{ f.description }}</td></tr>
{% endfor %}</table>
{% endfor %}
<p class="muted">* required</p>
</body></html>"""


def register(app: Flask, api: Api) -> None:
    """Serve the page at /v1/docs, built from `api`'s document on each request."""
    app.extensions["stylefarm_openapi"] = api
    app.register_blueprint(blp, url_prefix="/v1")


@blp.get("/docs")
def page() -> str:
    spec = current_app.extensions["stylefarm_openapi"].spec.to_dict()
    return render_template_string(
        _PAGE, info=spec["info"], secured=bool(spec.get("security")),
        groups=_operations(spec), schemas=_schemas(spec))


def _operations(spec: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for path, item in spec["paths"].items():
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            groups.setdefault(op.get("tags", ["other"])[0], []).append({
                "method": method, "path": path, "anchor": f"{method}-{path}",
                "summary": op.get("summary", ""), "description": op.get("description", ""),
                "parameters": [{**p, "type": _type(p.get("schema", {}))}
                               for p in item.get("parameters", []) + op.get("parameters", [])],
                "body": _body(op.get("requestBody")),
                "responses": [{"status": status, "description": reply.get("description", ""),
                               "schema": _body(reply)}
                              for status, reply in op.get("responses", {}).items()
                              if status != "default"],
            })
    return list(groups.items())


def _body(part: dict[str, Any] | None) -> str:
    """The media types of a request or reply, JSON ones linked to their schema."""
    if not part or "content" not in part:
        return ""
    return ", ".join(f"<code>{media}</code> {_type(content.get('schema', {}))}"
                     for media, content in part["content"].items())


def _schemas(spec: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    out = []
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        required = set(schema.get("required", []))
        out.append((name, [{"name": field, "required": field in required, "type": _type(prop),
                            "default": "" if prop.get("default") is None else prop["default"],
                            "description": prop.get("description", "")}
                           for field, prop in schema.get("properties", {}).items()]))
    return out


def _type(schema: dict[str, Any]) -> str:
    """A schema in a few words of HTML: its type, a link for a reference, its limits."""
    from markupsafe import escape

    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    for combinator in ("allOf", "oneOf", "anyOf"):
        if combinator in schema:
            joiner = " or " if combinator != "allOf" else " & "
            return joiner.join(_type(part) for part in schema[combinator])
    kind = schema.get("type", "")
    text = f"array of {_type(schema.get('items', {}))}" if kind == "array" else str(escape(kind))
    limits = [f"{key} {schema[key]}" for key in ("minimum", "maximum", "minItems", "maxItems",
                                                  "maxLength") if key in schema]
    if "enum" in schema:
        limits.append("one of " + ", ".join(str(v) for v in schema["enum"]))
    return text + (f" <span class='muted'>({escape('; '.join(limits))})</span>" if limits
                   else "")
