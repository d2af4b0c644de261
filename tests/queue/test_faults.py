"""Every accepted job finishes, once, after any single fault: real processes throughout.

A farm of real parts per database (SQLite, and PostgreSQL when TEST_DATABASE_URL is set):
its own `redis-server` (so the tests may restart it), the API as `stylefarm api`
(gunicorn), and two `stylefarm worker` processes, each in its own process group. Each
test submits jobs over HTTP, brings about one fault while they run, and then checks
every job: succeeded, exactly one result file, and exactly one worker that recorded the
success (the workers' logs say so).

Deadlines are hang guards of minutes, never a measure of speed: a slow machine makes
these tests slower, not red.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cli.procs import Api, RedisServer, Worker, empty_database, parent_of
from tests.queue.conftest import HANG_GUARD_S, ROOT, TEST_ENV, picture

pytestmark = pytest.mark.slow
JOB = {"size": 48, "min_size": 32, "iterations": [3, 40]}  # seconds of work, two scales


class Cluster:
    """Redis, database, API, two workers; helpers to submit and to check the outcome."""

    def __init__(self, root: Path, database_url: str) -> None:
        self.root = root
        self.database_url = database_url
        self.redis = RedisServer(root)
        self.redis.start(persist=False)
        self.env = {**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT),
                    "STYLEFARM_DATA_DIR": str(root / "data"), "REDIS_URL": self.redis.url,
                    "DATABASE_URL": database_url,
                    "STYLEFARM_QUEUE_PREFIX": f"faults-{uuid.uuid4().hex[:8]}."}
        self.api = Api(self.env, root / "api.log")
        self.api.start()  # migrates the database
        self.workers = [Worker(self.env, root / f"w{n}") for n in range(2)]
        for n, worker in enumerate(self.workers):
            (root / f"w{n}").mkdir()
            worker.start()
        self.content = self.upload(picture(64, 48, 1))
        self.style = self.upload(picture(48, 48, 3))

    def upload(self, data: bytes) -> str:
        reply = requests.post(f"{self.api.url}/v1/images", files={"file": ("x.png", data)},
                              timeout=30)
        assert reply.status_code in (200, 201), reply.text
        return reply.json()["id"]

    def submit(self, count: int, **params: Any) -> list[str]:
        jobs = [{"content": self.content, "styles": [self.style], "params": {**JOB, **params}}
                for _ in range(count)]
        body = {"name": "faults", "jobs": jobs}
        reply = requests.post(f"{self.api.url}/v1/batches", json=body, timeout=60)
        assert reply.status_code == 202, reply.text
        listed = requests.get(f"{self.api.url}/v1/jobs",
                              params={"batch": reply.json()["id"], "limit": 100}, timeout=30)
        return [job["id"] for job in listed.json()["items"]]

    def job(self, job_id: str) -> dict:
        reply = requests.get(f"{self.api.url}/v1/jobs/{job_id}", timeout=30)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def wait_for(self, what: Callable[[], Any], message: str) -> Any:
        deadline = time.monotonic() + HANG_GUARD_S
        while True:
            try:
                value = what()
            except requests.RequestException:  # the API restarting
                value = None
            if value:
                return value
            assert time.monotonic() < deadline, f"{message}\n{self.logs()}"
            time.sleep(0.2)

    def running(self, job_ids: list[str]) -> dict:
        """The first of `job_ids` to be rendering, and not past half its work: the fault's
        victim, with some twenty iterations still to go whatever the machine's speed (a
        victim that finished before the fault would prove nothing)."""
        def busy() -> dict | None:
            for job_id in job_ids:
                job = self.job(job_id)
                if (job["status"] == "running" and (job["iteration"] or 0) >= 2
                        and job["progress"] <= 0.5):
                    return job
            return None
        return self.wait_for(busy, "no job started rendering")

    def assert_each_succeeded_once(self, job_ids: list[str]) -> list[dict]:
        final = {"succeeded", "failed", "canceled"}
        jobs = [self.wait_for(lambda j=job_id: (job := self.job(j))["status"] in final and job,
                              f"job {job_id} never finished") for job_id in job_ids]
        assert [job["status"] for job in jobs] == ["succeeded"] * len(jobs), \
            [(job["id"], job["status"], job["error"]) for job in jobs]
        results = self.root / "data" / "results"
        logs = "".join(path.read_text(errors="replace")
                       for path in sorted(self.root.glob("w*/*.log")))
        for job in jobs:
            assert sorted(p.name for p in results.glob(f"*{job['id']}*")) == [f"{job['id']}.png"]
            assert logs.count(f"job {job['id']}: succeeded") == 1, job
        return jobs

    def logs(self) -> str:
        return "\n".join(f"--- {p}:\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.root.glob("w*/*.log")))

    def messages_held(self, job_ids: list[str]) -> set[str]:
        """Those of `job_ids` whose render messages Redis holds: still queued, or delivered
        to a worker and not yet acknowledged (kombu's "unacked" hash). A worker that
        reconnects after a restart may take a waiting message at once, so the queues
        alone are not enough. A message names its job in its `argsrepr` header."""
        import redis

        client = redis.Redis.from_url(self.redis.url)
        prefix = self.env["STYLEFARM_QUEUE_PREFIX"]
        raw = [m for level in ("high", "normal", "low")
               for m in client.lrange(f"{prefix}{level}", 0, -1)]
        held = b" ".join([*raw, *client.hvals("unacked")])
        return {job_id for job_id in job_ids if job_id.encode() in held}

    def child_of(self, job: dict) -> int:
        """The pool child running `job`: its row names the process ("host:pid")."""
        return int(job["worker"].rsplit(":", 1)[1])

    def worker_running(self, job: dict) -> Worker:
        child = self.child_of(job)
        parent = parent_of(child)
        return next(w for w in self.workers if w.proc is not None and w.proc.pid == parent)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self.api.proc is not None and self.api.proc.poll() is None:
            self.api.kill()
        self.redis.stop(signal.SIGKILL)


def _database_kinds() -> list[str]:
    return ["sqlite", "postgresql"] if os.environ.get("TEST_DATABASE_URL") else ["sqlite"]


@pytest.fixture(scope="module", params=_database_kinds())
def cluster(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp(f"faults-{request.param}")
    if request.param == "postgresql":
        url = os.environ["TEST_DATABASE_URL"]
        empty_database(url)
    else:
        url = f"sqlite:///{root / 'data' / 'stylefarm.db'}"
    made = Cluster(root, url)
    try:
        yield made
    finally:
        made.stop()


def test_worker_process_group_killed(cluster: Cluster) -> None:
    jobs = cluster.submit(3)
    victim = cluster.running(jobs)
    worker = cluster.worker_running(victim)
    worker.kill()  # main process and child: nobody acks, its reconciler is gone too
    done = cluster.assert_each_succeeded_once(jobs)  # the other worker's reconciler requeues
    assert next(j for j in done if j["id"] == victim["id"])["attempts"] == 2
    worker.start()


def test_pool_child_killed_and_the_next_job_runs(cluster: Cluster) -> None:
    [job_id] = cluster.submit(1)
    victim = cluster.running([job_id])
    worker = cluster.worker_running(victim)
    os.kill(cluster.child_of(victim), signal.SIGKILL)  # as the kernel's OOM killer does
    [done] = cluster.assert_each_succeeded_once([job_id])
    assert done["attempts"] == 2
    # The parent's new child must stay up and take work: stop the other worker, so the
    # next job can only run on this one.
    other = next(w for w in cluster.workers if w is not worker)
    other.stop()
    try:
        nxt = cluster.submit(1)
        [after] = cluster.assert_each_succeeded_once(nxt)
        assert cluster.child_of(after) != cluster.child_of(victim)
        assert cluster.worker_running(after) is worker  # its new child, still serving
        assert "Timed out waiting for UP message" not in worker.output()
    finally:
        other.start()


@pytest.mark.parametrize("persist", [False, True], ids=["no-persistence", "append-only"])
def test_redis_restarted(cluster: Cluster, persist: bool) -> None:
    if persist:
        cluster.redis.restart(persist=True)  # from here on with an AOF
    jobs = cluster.submit(4)  # two render, two wait in the queue
    cluster.running(jobs)
    waiting = [job_id for job_id in jobs if cluster.job(job_id)["status"] == "queued"]
    cluster.redis.restart(persist=persist, how=signal.SIGTERM if persist else signal.SIGKILL)
    if persist:  # the messages of the jobs that waited survived
        assert cluster.messages_held(waiting) == set(waiting), waiting
    cluster.assert_each_succeeded_once(jobs)
    if persist:
        cluster.redis.restart(persist=False)


def test_api_restarted(cluster: Cluster) -> None:
    jobs = cluster.submit(3)
    cluster.running(jobs)
    cluster.api.kill()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{cluster.api.url}/healthz", timeout=5)
    cluster.api.start()
    jobs += cluster.submit(1)
    cluster.assert_each_succeeded_once(jobs)


def test_database_restarted(cluster: Cluster) -> None:
    """PostgreSQL: every connection to the test database is terminated, five times over
    a few seconds (what clients see when the server restarts; the shared server itself
    cannot be restarted). SQLite: the file is locked by another process's exclusive
    transaction for three leases (a database that is there but does not answer)."""
    jobs = cluster.submit(3)
    cluster.running(jobs)
    if cluster.database_url.startswith("sqlite"):
        hold_sqlite_lock(cluster.database_url.split("///", 1)[1], seconds=6)
    else:
        terminate_connections(cluster.database_url, times=5, gap=1.0)
    cluster.assert_each_succeeded_once(jobs)


def hold_sqlite_lock(path: str, seconds: float) -> None:
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    time.sleep(seconds)
    conn.execute("ROLLBACK")
    conn.close()


def terminate_connections(url: str, times: int, gap: float) -> None:
    from sqlalchemy import text

    from shared.db import make_engine

    engine = make_engine(url, pooled=False)
    name = re.sub(r"\?.*$", "", url).rsplit("/", 1)[1]
    try:
        for _ in range(times):
            with engine.begin() as conn:
                killed = conn.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name}).scalar()
            assert killed is not None
            time.sleep(gap)
    finally:
        engine.dispose()


def test_nothing_is_left_active(cluster: Cluster) -> None:
    """After all the faults above: no job stuck queued or running anywhere in the farm."""
    for status in ("queued", "running", "cancel-requested"):
        reply = requests.get(f"{cluster.api.url}/v1/jobs", params={"status": status},
                             timeout=30)
        assert reply.status_code == 200 and reply.json()["items"] == [], reply.text
