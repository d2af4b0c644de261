"""The reconciler: makes the broker and the storage volume agree with the database.

The database is the source of truth for what a job needs (shared.models); Redis only
carries "job X may be run now". Workers die, Redis restarts empty, a message is held by
a consumer that will never ack it: each leaves a job that nothing would ever run. A
pass puts that right, cheaply enough to run every few seconds:

1. Expired leases. A running job whose heartbeat is older than the lease lost its worker:
   it is queued again and sent (or failed, at the attempt cap); a stale cancel request
   ends as canceled.
2. Messages held by the dead. An unacknowledged message older than the lease whose job
   is not running was taken by a consumer that is not working on it (a live worker claims
   a job the moment it receives it): the entry is dropped and a queued job is sent again,
   instead of waiting for Redis's visibility timeout (hours).
3. The audit, once per audit interval, and at once when Redis lost its data (the key
   that times the audits is gone with it): every queued job is compared with the
   messages in the render queues and the live unacknowledged ones; only the missing are
   sent. Orphaned checkpoints and stale temp files are removed.

A pass never moves a job into `running`: a message is all it sends, and the worker's
guarded claim (shared.transitions.claim) stays the only way in, so a spare message costs
one skipped delivery, never a second run. One pass runs at a time across the farm: the
pass holds a lease on a Redis key, which then keeps the next pass away for an interval.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import redis
from celery import Celery
from sqlalchemy import Engine, select

from shared import transitions
from shared.db import make_engine, session_scope
from shared.models import ACTIVE, Job, Status
from shared.queue import RENDER_TASK, enqueue_jobs, enqueue_webhooks, get_app, render_queues
from shared.settings import Settings, get_settings
from shared.storage import Storage
from shared.webhooks import owed

log = logging.getLogger(__name__)
SCAN_CHUNK = 1000  # messages read per LRANGE / HMGET

# Drop an unacknowledged entry only if it is still there (kombu's own restore may race us).
_DROP_UNACKED = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
"""
# Keep the turn for `ARGV[2]` ms more, if it is still ours.
_HOLD_TURN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


@dataclass
class PassReport:
    """What one pass did (logged, and read by tests and the benchmark)."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    dropped_unacked: int = 0
    audited: bool = False
    files_removed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.requeued or self.failed or self.canceled or self.resent
                    or self.dropped_unacked or self.files_removed)


class Reconciler:
    """One farm's reconciler; `maybe_run` from a loop in any number of processes."""

    def __init__(self, settings: Settings | None = None, app: Celery | None = None,
                 engine: Engine | None = None) -> None:
        self.settings = settings or get_settings()
        self.app = app or get_app()
        # No pool: nothing of ours stays open in a parent that forks pool children.
        self.engine = engine or make_engine(self.settings.effective_database_url, pooled=False)
        self.redis = redis.Redis.from_url(self.settings.effective_redis_url,
                                          socket_timeout=10, socket_connect_timeout=5)
        self.storage = Storage(self.settings.data_dir)
        prefix = self.settings.queue_prefix
        self.turn_key = f"{prefix}reconcile:turn"
        self.audit_key = f"{prefix}reconcile:audit"
        options = self.app.conf.broker_transport_options or {}
        self.unacked_key = options.get("unacked_key", "unacked")
        self.unacked_index_key = options.get("unacked_index_key", "unacked_index")
        self.queues = render_queues(self.settings)
        self.audit_next = False  # set when a pass failed half-way: messages may be missing

    # ------------------------------------------------------------------------- driving

    def maybe_run(self) -> PassReport | None:
        """Run a pass if it is this process's turn (no other pass for an interval)."""
        token = uuid.uuid4().hex
        # Held for two intervals and a second: a process killed mid-pass delays the next
        # pass by no more than that (a pass that outlasts it overlaps the next: safe, as
        # every step is a guarded UPDATE or a message, but never needed: passes take ms).
        hold_ms = int((2 * self.settings.reconcile_interval + 1) * 1000)
        if not self.redis.set(self.turn_key, token, nx=True, px=hold_ms):
            return None
        try:
            return self.run_pass()
        finally:
            hold_ms = max(1, int(self.settings.reconcile_interval * 1000))
            self.redis.eval(_HOLD_TURN, 1, self.turn_key, token, hold_ms)

    def run_pass(self, *, audit: bool = False) -> PassReport:
        """One pass, steps 1-3 of the module's docstring."""
        started = time.perf_counter()
        report = PassReport()
        audit_ms = max(1, int(self.settings.reconcile_audit_interval * 1000))
        report.audited = (audit or self.audit_next
                          or bool(self.redis.set(self.audit_key, "1", nx=True, px=audit_ms)))
        self.audit_next = True  # until this pass has sent everything it meant to
        self.expire_leases(report)
        self.release_held_by_the_dead(report)
        if report.audited:
            self.resend_missing(report)
            self.remove_orphaned_files(report)
        self.audit_next = False
        report.seconds = time.perf_counter() - started
        if report:
            log.info("reconcile: requeued %d, failed %d, canceled %d, resent %d, dropped %d "
                     "unacked, removed %d files%s", len(report.requeued), len(report.failed),
                     len(report.canceled), len(report.resent), report.dropped_unacked,
                     len(report.files_removed), " (audit)" if report.audited else "")
        return report

    # ------------------------------------------------------------------------- 1. leases

    def expire_leases(self, report: PassReport) -> None:
        """Requeue (or fail, or cancel) jobs whose worker stopped beating, and announce
        the finished ones' webhooks."""
        settings = self.settings
        with session_scope(self.engine) as session:
            expired = transitions.expire_leases(session, lease_seconds=settings.lease_seconds,
                                                max_attempts=settings.max_attempts)
            finished = expired.failed + expired.canceled
            webhooks = owed(session, finished, settings) if finished else []
        report.requeued = [job_id for job_id, _ in expired.requeued]
        report.failed, report.canceled = expired.failed, expired.canceled
        self.send(expired.requeued, report)
        for job_id in finished:
            self.storage.checkpoint_path(job_id).unlink(missing_ok=True)
        if webhooks:
            enqueue_webhooks(webhooks, app=self.app)

    # ---------------------------------------------------------------- 2. held messages

    def release_held_by_the_dead(self, report: PassReport) -> None:
        """Drop unacknowledged entries older than the lease whose job is not running."""
        ceiling = time.time() - self.settings.lease_seconds
        tags = self.redis.zrangebyscore(self.unacked_index_key, "-inf", ceiling)
        held = dict(self._held_jobs(tags))  # tag -> job id, our render messages only
        if not held:
            return
        with session_scope(self.engine) as session:
            rows = session.execute(select(Job.id, Job.status, Job.priority)
                                   .where(Job.id.in_(set(held.values())))).all()
        status = {job_id: (state, priority) for job_id, state, priority in rows}
        queued: dict[str, int] = {}
        for tag, job_id in held.items():
            state, priority = status.get(job_id, (None, 0))
            if state in (Status.RUNNING.value, Status.CANCEL_REQUESTED.value):
                continue  # its worker holds the message while it renders
            if self.redis.eval(_DROP_UNACKED, 2, self.unacked_index_key, self.unacked_key, tag):
                report.dropped_unacked += 1
                if state == Status.QUEUED.value:
                    queued[job_id] = priority
        self.send([item for item in queued.items() if item[0] not in report.requeued], report)

    def _held_jobs(self, tags: list[bytes]) -> Iterator[tuple[bytes, str]]:
        for start in range(0, len(tags), SCAN_CHUNK):
            chunk = tags[start:start + SCAN_CHUNK]
            for tag, entry in zip(chunk, self.redis.hmget(self.unacked_key, chunk), strict=True):
                if entry is None:
                    continue
                raw, _exchange, routing_key = json.loads(entry)
                job_id = render_job_of(raw) if routing_key in self.queues else None
                if job_id:
                    yield tag, job_id

    # -------------------------------------------------------------------------- 3. audit

    def resend_missing(self, report: PassReport) -> None:
        """Send each queued job that has no message in Redis (read Redis first: a job
        whose message is consumed meanwhile is no longer queued, or costs a spare)."""
        present = set(self.jobs_with_messages())
        with session_scope(self.engine) as session:
            queued = session.execute(select(Job.id, Job.priority)
                                     .where(Job.status == Status.QUEUED.value)).all()
        self.send([(job_id, priority) for job_id, priority in queued
                   if job_id not in present and job_id not in report.resent], report)

    def jobs_with_messages(self) -> Iterator[str]:
        """Job ids of the render messages waiting in the queues or held by a live consumer."""
        for queue in self.queues:
            for start in range(0, self.redis.llen(queue), SCAN_CHUNK):
                for raw in self.redis.lrange(queue, start, start + SCAN_CHUNK - 1):
                    job_id = render_job_of(json.loads(raw))
                    if job_id:
                        yield job_id
        fresh = self.redis.zrangebyscore(self.unacked_index_key,
                                         time.time() - self.settings.lease_seconds, "+inf")
        for _tag, job_id in self._held_jobs(fresh):
            yield job_id

    def remove_orphaned_files(self, report: PassReport) -> None:
        """Checkpoints of jobs that are not active any more, and temp files left by a
        process that died mid-write."""
        checkpoints = {path.stem: path for path in _listdir(self.storage.root / "checkpoints")
                       if path.suffix == ".pt" and not path.name.startswith(".")}
        if checkpoints:
            with session_scope(self.engine) as session:
                active = set(session.scalars(select(Job.id).where(
                    Job.id.in_(list(checkpoints)),
                    Job.status.in_([status.value for status in ACTIVE]))))
            for job_id, path in checkpoints.items():
                if job_id not in active:
                    path.unlink(missing_ok=True)
                    report.files_removed.append(str(path))
        old = time.time() - self.settings.stale_temp_seconds
        for path in _temp_files(self.storage.root):
            try:
                if path.stat().st_mtime < old:
                    path.unlink()
                    report.files_removed.append(str(path))
            except FileNotFoundError:
                pass  # finished (renamed) or removed meanwhile

    # ------------------------------------------------------------------------- sending

    def send(self, items: Iterable[tuple[str, int]], report: PassReport) -> None:
        items = list(items)
        if items:
            enqueue_jobs(items, app=self.app)
            report.resent.extend(job_id for job_id, _ in items)


def render_job_of(message: dict) -> str | None:
    """The job id a kombu message (as stored in Redis) asks to render, or None."""
    headers = message.get("headers") or {}
    if headers.get("task") != RENDER_TASK:
        return None
    try:
        args = json.loads(base64.b64decode(message["body"]))[0]
    except (KeyError, ValueError, IndexError, TypeError):
        return None
    return args[0] if args and isinstance(args[0], str) else None


def _listdir(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except FileNotFoundError:
        return []


def _temp_files(root: Path) -> Iterator[Path]:
    """`atomic_write`'s temp files (".NAME.XXXXXXXX.tmp") anywhere under the storage root."""
    for path in root.rglob(".*.tmp"):
        if path.is_file():
            yield path


class ReconcileLoop:
    """A daemon thread that calls `maybe_run` every interval, and survives any failure
    (Redis or the database away): the next tick simply tries again."""

    def __init__(self, reconciler: Reconciler | None = None) -> None:
        self.reconciler = reconciler
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stylefarm-reconcile",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        interval = get_settings().reconcile_interval
        while not self._stop.wait(interval):
            try:
                if self.reconciler is None:
                    self.reconciler = Reconciler()
                self.reconciler.maybe_run()
            except Exception as exc:
                self._ask_for_audit()
                log.warning("reconcile pass failed (%s: %s); next one in %.1f s",
                            type(exc).__name__, exc, interval)

    def _ask_for_audit(self) -> None:
        """A pass failed half-way, so messages may be missing: whoever runs next audits."""
        if self.reconciler is None:
            return
        self.reconciler.audit_next = True
        with suppress(redis.RedisError):  # Redis away: this process audits on its next turn
            self.reconciler.redis.delete(self.reconciler.audit_key)
