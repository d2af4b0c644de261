"""Swagger UI served offline: the files of the `swagger-ui-bundle` package, from the API.

flask-smorest's /v1/swagger page loads `swagger-ui-bundle.js` and `swagger-ui.css` from
OPENAPI_SWAGGER_UI_URL; pointing that here keeps the page working on a farm without
internet access. ReDoc has no packaged copy on PyPI, so /v1/redoc sends the browser to
Swagger UI (the same document, also interactive) rather than to a CDN.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, abort, redirect, send_from_directory
from werkzeug.wrappers import Response

ASSETS_URL = "/v1/swagger-ui/"
_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js",
                    "favicon-32x32.png", "favicon-16x16.png", "oauth2-redirect.html"})

blp = Blueprint("swagger", __name__)


def assets_dir() -> Path:
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


def register(app: Flask) -> None:
    app.register_blueprint(blp)


@blp.get(f"{ASSETS_URL}<name>")
def asset(name: str) -> Response:
    if name not in _FILES:
        abort(404)
    reply = send_from_directory(assets_dir(), name, max_age=86400)
    return reply


@blp.get("/v1/redoc")
def redoc() -> Response:
    return redirect("/v1/swagger", code=302)
