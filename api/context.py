"""What a request needs from the app: settings, the database session, storage, the queue.

Held in `app.extensions["stylefarm"]` so that two apps with different settings
(tests make one per database) never share state through module globals.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from threading import Lock
from typing import TYPE_CHECKING, Any

from flask import current_app, g, request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shared.settings import Settings
from shared.storage import Storage

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)


@dataclass
class State:
    settings: Settings
    engine: Engine
    storage: Storage
    sessions: sessionmaker[Session]
    readers: sessionmaker[Session]  # autocommit: for requests that only read
    _celery: Any = None
    _redis: Any = None
    _lock: Lock = field(default_factory=Lock)
    # Small per-process caches (api.cache.TtlCache): /metrics's counts, live fragments.
    caches: dict[str, Any] = field(default_factory=dict)

    def redis(self) -> Any:
        """A plain Redis client on the broker (worker records, queue depths, figures)."""
        with self._lock:
            if self._redis is None:
                import redis

                self._redis = redis.Redis.from_url(self.settings.effective_redis_url,
                                                   socket_timeout=5, socket_connect_timeout=5)
            return self._redis

    def celery(self) -> Celery:
        """The queue's Celery app for these settings, made on first use (importing Celery
        costs a few hundred ms that `GET /healthz` and the tests of reads need not pay)."""
        with self._lock:
            if self._celery is None:
                from shared.queue import make_celery

                self._celery = make_celery(self.settings)
            return self._celery

    def warm(self) -> None:
        """Before serving: import and connect the queue, open a database connection.

        A server pays these on its first requests otherwise (about a second, most of it
        in the first batch). A broker that is down is not an error here: requests say so.
        """
        from shared.queue import warm

        with self.engine.connect():
            pass
        try:
            warm(self.celery())
        except Exception as exc:  # reported; each request answers for itself
            log.warning("queue not reachable at start (%s); requests will retry", exc)


def state() -> State:
    return current_app.extensions["stylefarm"]


def settings() -> Settings:
    return state().settings


def storage() -> Storage:
    return state().storage


_READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def db() -> Session:
    """This request's session (closed when the request ends).

    Requests that only read run in autocommit: no BEGIN and ROLLBACK around their
    SELECTs, two fewer round trips to PostgreSQL on every status poll.
    """
    if "db" not in g:
        factory = state().readers if request.method in _READ_ONLY_METHODS else state().sessions
        g.db = factory()
    return g.db


def close_db(_exc: BaseException | None = None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()


def enqueue(items: Sequence[tuple[str, int]]) -> None:
    """Put committed jobs on the queue: one message per (job id, priority)."""
    from shared.queue import enqueue_jobs

    enqueue_jobs(items, app=state().celery())


def announce(job_ids: list[str], batch_id: str | None = None) -> None:
    """Queue the webhooks that these jobs' (and this batch's) committed finishes owe (a
    cancel of queued jobs finishes them here, not on a worker). Workers announce the same
    finishes when they reach the jobs' messages, once only: if the broker is away now,
    that is the fallback."""
    from shared.queue import enqueue_webhooks
    from shared.webhooks import owed

    try:
        enqueue_webhooks(owed(db(), job_ids, settings(), [batch_id] if batch_id else []),
                         app=state().celery())
    except Exception:
        log.exception("could not queue the webhooks of %d canceled jobs", len(job_ids))


def owner() -> str:
    """Who is asking (see api.auth): "" when the API runs without keys."""
    return g.get("owner", "")
