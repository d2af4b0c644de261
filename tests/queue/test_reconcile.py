"""The reconciler's passes against a real Redis and a real database (no worker needed).

Jobs are written straight into the database in the states a fault leaves behind, and
the broker's state is Redis's own: messages sent by `enqueue_jobs`, unacknowledged
entries in the shape kombu writes them. Each test then runs passes and reads back what
the database and Redis hold.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import insert

from shared.db import make_engine, session_scope
from shared.migrate import upgrade
from shared.models import Image, Job, Status, utcnow
from shared.queue import enqueue_jobs, make_celery, queue_name
from shared.reconcile import Reconciler, render_job_of
from shared.settings import Settings
from shared.transitions import exhausted_error

LEASE_S = 5.0


class Scene:
    """A database, a Redis prefix and a reconciler for one test."""

    def __init__(self, database_url: str, redis_url: str, data_dir: Path) -> None:
        upgrade(database_url)
        self.settings = Settings().with_(
            database_url=database_url, redis_url=redis_url, data_dir=data_dir,
            queue_prefix=f"rec-{uuid.uuid4().hex[:8]}.", lease_seconds=LEASE_S,
            max_attempts=3, reconcile_interval=0.2, reconcile_audit_interval=3600)
        self.app = make_celery(self.settings)
        self.engine = make_engine(database_url)
        self.redis = redis.Redis.from_url(redis_url)
        self.reconciler = Reconciler(self.settings, self.app)
        with session_scope(self.engine) as session:
            session.add(Image(id="c" * 64, width=32, height=32, format="PNG", byte_size=1))

    def add(self, status: Status, *, beat_age: float | None = None, attempts: int = 0,
            priority: int = 0) -> str:
        job_id = uuid.uuid4().hex
        beat = utcnow() - timedelta(seconds=beat_age) if beat_age is not None else None
        with session_scope(self.engine) as session:
            session.execute(insert(Job).values(
                id=job_id, content_image_id="c" * 64, styles=[{"image": "c" * 64}],
                params={"size": 32}, priority=priority, status=status.value,
                heartbeat_at=beat, attempts=attempts, worker="gone:1" if beat else None))
        return job_id

    def job(self, job_id: str) -> Job:
        with session_scope(self.engine) as session:
            return session.get(Job, job_id)

    def queued_messages(self, level: str = "normal") -> list[str]:
        return [render_job_of(json.loads(raw))
                for raw in self.redis.lrange(queue_name(level, self.settings), 0, -1)]

    def hold(self, job_id: str, age: float) -> str:
        """Take the job's message off its queue as a consumer does (kombu's unacked
        hash and index), `age` seconds ago, and never ack it."""
        queue = queue_name("normal", self.settings)
        raw = self.redis.rpop(queue)
        assert render_job_of(json.loads(raw)) == job_id
        tag = uuid.uuid4().hex
        self.redis.hset("unacked", tag, json.dumps([json.loads(raw), "", queue]))
        self.redis.zadd("unacked_index", {tag: time.time() - age})
        return tag

    def close(self) -> None:
        for key in self.redis.scan_iter(f"{self.settings.queue_prefix}*"):
            self.redis.delete(key)
        self.engine.dispose()
        self.reconciler.engine.dispose()


@pytest.fixture
def scene(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Scene]:
    made = Scene(database_url, redis_url, tmp_path / "data")
    yield made
    made.close()


def test_expired_lease_is_queued_again_and_sent_once(scene: Scene) -> None:
    lost = scene.add(Status.RUNNING, beat_age=LEASE_S * 3, attempts=1, priority=5)
    alive = scene.add(Status.RUNNING, beat_age=0, attempts=1)
    report = scene.reconciler.run_pass()
    assert report.requeued == [lost] and report.resent == [lost]
    job = scene.job(lost)
    assert job.status == Status.QUEUED.value and job.attempts == 1 and job.worker is None
    assert scene.queued_messages("high") == [lost]  # its priority's queue
    assert scene.job(alive).status == Status.RUNNING.value
    again = scene.reconciler.run_pass()
    assert not again.resent and scene.queued_messages("high") == [lost]  # not sent twice


def test_attempt_cap_fails_and_stale_cancel_request_cancels(scene: Scene) -> None:
    capped = scene.add(Status.RUNNING, beat_age=LEASE_S * 3, attempts=3)
    asked = scene.add(Status.CANCEL_REQUESTED, beat_age=LEASE_S * 3, attempts=1)
    checkpoint = scene.reconciler.storage.checkpoint_path(asked)
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"scale 1")
    report = scene.reconciler.run_pass()
    assert report.failed == [capped] and report.canceled == [asked] and not report.resent
    failed = scene.job(capped)
    assert failed.status == Status.FAILED.value and failed.error == exhausted_error(3)
    canceled = scene.job(asked)
    assert canceled.status == Status.CANCELED.value and canceled.finished_at is not None
    assert not checkpoint.exists()


def test_audit_sends_only_the_queued_jobs_whose_messages_are_gone(scene: Scene) -> None:
    jobs = [scene.add(Status.QUEUED) for _ in range(5)]
    enqueue_jobs([(job_id, 0) for job_id in jobs], app=scene.app)
    scene.reconciler.run_pass()  # the first pass audits (no audit key yet) and finds all
    assert sorted(scene.queued_messages()) == sorted(jobs)
    queue = queue_name("normal", scene.settings)
    scene.redis.rpop(queue, 2)  # two messages lost (consumed, never acked, nowhere now)
    assert not scene.reconciler.run_pass().resent  # not an audit pass: nothing read
    scene.redis.delete(scene.reconciler.audit_key)  # as a Redis restarted empty leaves it
    report = scene.reconciler.run_pass()
    assert report.audited and sorted(report.resent) == sorted(jobs[:2])  # RPOP: oldest first
    assert sorted(scene.queued_messages()) == sorted(jobs)


def test_message_held_by_a_dead_consumer_is_released(scene: Scene) -> None:
    queued, running = scene.add(Status.QUEUED), scene.add(Status.RUNNING, beat_age=0)
    enqueue_jobs([(queued, 0)], app=scene.app)
    enqueue_jobs([(running, 0)], app=scene.app)
    dead = scene.hold(queued, age=LEASE_S * 2)  # the consumer died before claiming it
    busy = scene.hold(running, age=LEASE_S * 2)  # a long render: its worker holds it
    try:
        report = scene.reconciler.run_pass()
        assert report.resent == [queued] and report.dropped_unacked == 1
        assert scene.queued_messages() == [queued]
        assert scene.redis.hget("unacked", dead) is None
        assert scene.redis.hget("unacked", busy) is not None
        assert not scene.reconciler.run_pass().resent
    finally:
        scene.redis.hdel("unacked", dead, busy)
        scene.redis.zrem("unacked_index", dead, busy)


def test_orphaned_checkpoints_and_stale_temp_files_are_removed(scene: Scene) -> None:
    storage = scene.reconciler.storage
    done, waiting = scene.add(Status.SUCCEEDED), scene.add(Status.QUEUED)
    enqueue_jobs([(waiting, 0)], app=scene.app)
    for job_id in (done, waiting, "nosuchjob"):
        path = storage.checkpoint_path(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    old_temp = storage.root / "results" / f".{done}.png.abc123.tmp"
    new_temp = storage.root / "results" / f".{waiting}.png.def456.tmp"
    old_temp.parent.mkdir(parents=True)
    old_temp.write_bytes(b"half")
    new_temp.write_bytes(b"being written")
    an_hour_ago = time.time() - scene.settings.stale_temp_seconds - 60
    os.utime(old_temp, (an_hour_ago, an_hour_ago))
    report = scene.reconciler.run_pass(audit=True)
    assert sorted(report.files_removed) == sorted(
        [str(storage.checkpoint_path(done)), str(storage.checkpoint_path("nosuchjob")),
         str(old_temp)])
    assert storage.checkpoint_path(waiting).exists() and new_temp.exists()


def test_one_pass_at_a_time_across_replicas(scene: Scene) -> None:
    other = Reconciler(scene.settings, scene.app)
    try:
        assert scene.reconciler.maybe_run() is not None
        assert other.maybe_run() is None  # within the interval of the last pass
        time.sleep(scene.settings.reconcile_interval + 0.3)
        assert other.maybe_run() is not None
    finally:
        other.engine.dispose()
