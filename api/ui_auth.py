"""Sign-in for the dashboard: the API key, once, then a signed session cookie.

A browser cannot add `Authorization: Bearer` to an <img> or a link, so the dashboard
keeps the key's owner id (api.auth.owner_id, never the key) in Flask's signed cookie.
The cookie is HttpOnly and SameSite=Lax, so another site cannot post the dashboard's
forms with it. The signing secret is STYLEFARM_SECRET_KEY, or derived from the whole
list of API keys (which a holder of one key does not know); changing the keys signs
everyone out.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from flask import Flask, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from api.auth import owner_id
from api.context import settings


def configure(app: Flask) -> None:
    keys = app.extensions["stylefarm"].settings.api_keys
    secret = app.extensions["stylefarm"].settings.secret_key
    if not secret:
        secret = hashlib.sha256(b"stylefarm-dashboard\0" + "\0".join(sorted(keys)).encode()
                                + app.extensions["stylefarm"].settings.effective_database_url
                                .encode()).hexdigest()
    app.secret_key = secret
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_NAME="stylefarm_session")


def require_signin() -> Response | None:
    """before_request of the dashboard: set g.owner, or send the browser to sign in."""
    g.owner = ""
    if not settings().api_keys or request.endpoint in ("ui.signin", "ui.signout"):
        return None
    owner = session.get("owner")
    if owner and any(hmac.compare_digest(owner, owner_id(k)) for k in settings().api_keys):
        g.owner = owner
        return None
    if request.method == "GET" and not request.path.startswith("/ui/"):
        return redirect(url_for("ui.signin", next=request.full_path.rstrip("?")))
    return Response("sign in first: /signin", status=401, mimetype="text/plain")


def sign_in() -> Response | str:
    """GET: the form; POST: check the key (every key compared, in constant time)."""
    if request.method == "GET":
        return render_template("signin.html", error=None, next=safe_next())
    key = request.form.get("key", "").strip()
    matched = [k for k in settings().api_keys if hmac.compare_digest(k.encode(), key.encode())]
    if not matched:
        return Response(render_template("signin.html", error="unknown API key",
                                        next=safe_next()), status=401)
    session.clear()
    session["owner"] = owner_id(matched[0])
    return redirect(safe_next())


def sign_out() -> Response:
    session.clear()
    return redirect(url_for("ui.signin"))


def safe_next(default: str = "/") -> str:
    """A same-site path to return to (never an absolute URL: no open redirect)."""
    target = request.values.get("next", "") or default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    return target
