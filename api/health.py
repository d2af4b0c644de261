"""GET /healthz: does this API reach its database and its Redis? (No key needed.)"""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from sqlalchemy import text

from api.context import settings, state
from api.parsing import Blueprint

blp = Blueprint("health", __name__, description="Liveness and dependencies, for load "
                                                "balancers and `stylefarm up`.")


def _check_database() -> dict[str, Any]:
    try:
        with state().engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"ok": True}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}


def _check_redis() -> dict[str, Any]:
    import redis

    try:
        client = redis.Redis.from_url(settings().effective_redis_url, socket_timeout=1,
                                      socket_connect_timeout=1)
        try:
            client.ping()
        finally:
            client.close()
        return {"ok": True}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}


@blp.route("/healthz")
class Health(MethodView):
    @blp.response(200, description="both answer")
    @blp.alt_response(503, description="the database or Redis does not answer")
    def get(self) -> Any:
        """200 when the database and Redis both answer, 503 otherwise."""
        database, broker = _check_database(), _check_redis()
        ok = database["ok"] and broker["ok"]
        body = {"status": "ok" if ok else "unavailable", "database": database, "redis": broker}
        return body, 200 if ok else 503
