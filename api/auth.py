"""API keys: `Authorization: Bearer <key>` when settings.api_keys is not empty.

Each key is an owner: it sees only the jobs and batches it created. The owner
stored in the database is a digest of the key, so a database dump leaks no keys
and rotating the list of keys needs no migration. Images are content-addressed
and shared: knowing an image's sha256 means having had its bytes.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import g, request

from api.context import settings
from api.errors import ApiError

# Endpoints anyone may call: health checks (load balancers carry no key), the docs and
# /metrics (Prometheus carries no key; it shows counts, never a job, image or key).
PUBLIC_BLUEPRINTS = frozenset({"health", "api-docs", "docs", "swagger", "metrics",
                               "ui"})  # the dashboard signs in on its own: api.ui_auth


def owner_id(key: str) -> str:
    """A stable, non-secret id for an API key."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def authenticate() -> None:
    """before_request: set g.owner, or answer 401."""
    keys = settings().api_keys
    g.owner = ""
    if not keys or request.blueprint in PUBLIC_BLUEPRINTS or request.endpoint in (None, "static"):
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    challenge = {"WWW-Authenticate": 'Bearer realm="stylefarm"'}
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "an API key is required: Authorization: Bearer <key>",
                       headers=challenge)
    # Compare against every key in constant time: no early exit that times the match.
    matched = [key for key in keys if hmac.compare_digest(key.encode(), token.encode())]
    if not matched:
        raise ApiError(401, "unknown API key", headers=challenge)
    g.owner = owner_id(matched[0])
