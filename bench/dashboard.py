"""Dashboard, /metrics and batch-zip benchmark: prints tables. Not a test.

    uv run python bench/dashboard.py [--database-url URL] [--sections pages,live,archive]

Starts, on this machine, a private redis-server and the API under gunicorn (`stylefarm
api`, 2 workers x 4 threads), on SQLite in a temp dir and, with --database-url (a
PostgreSQL database whose tables are DROPPED first: never one that tests or a farm use),
on that database too. No render worker: a thread plays one, moving the progress of 4
running jobs every 0.5 s, so the dashboard's fragments change as they do on a busy farm.

pages:   a 10,000-job batch among 100,000 jobs (10 batches; 30 % succeeded, 5 % failed,
         4 running). Time to first byte of the batch page, a job-grid page deep in the
         batch (keyset cursor at job 5,000), the grid filtered by status, the live
         fragment and /metrics (cache hit, and a miss); the database time of /metrics's
         count of jobs (the triggers' table) beside a GROUP BY over the 100,000 jobs.
live:    32 status pollers (GET /v1/jobs/<id> every 0.25 s, as bench/queue.py) for
         --seconds, without and then with 100 dashboard clients polling their page's live
         fragment every second the way api/static/live.js does (If-None-Match). The
         API's CPU (all gunicorn processes, from /proc) and the pollers' p99, side by side.
archive: a 1,000-result batch (192 px noise PNGs, ~110 KB each) streamed as a zip: peak
         resident memory of the API worker that sent it, against the zip's size (what an
         archive built in memory would hold at least).
"""

# ruff: noqa: E402 - the path fix below must run before the imports
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)  # bench/queue.py would shadow the standard library's queue

import argparse
import http.client
import io
import multiprocessing
import os
import random
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import redis
import requests

from bench.queue import percentile, png, poll_latency
from cli.procs import Api, children, empty_database
from cli.services import free_port, redis_answers, redis_server_binary

TINY = {"size": 16, "min_size": 16, "iterations": [1]}
BATCH_JOBS = 10_000


class Stack:
    """`stylefarm api` (gunicorn, 2 workers x 4 threads) for one database."""

    def __init__(self, database_url: str, workdir: Path, redis_url: str) -> None:
        self.env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
                    "STYLEFARM_DATA_DIR": str(workdir / "data"), "PYTHONPATH": str(ROOT),
                    "STYLEFARM_QUEUE_PREFIX": f"bench-{uuid.uuid4().hex[:6]}."}
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.url = database_url
        self.api = Api(self.env, workdir / "api.log", workers=2)
        self.base = self.api.url

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.api.proc

    def start(self) -> None:
        self.api.start()  # migrates the database first

    def stop(self) -> None:
        self.api.stop()

    def cpu_seconds(self) -> float:
        """User + system CPU of gunicorn's master and workers so far."""
        assert self.proc is not None
        total = 0.0
        for pid in [self.proc.pid, *children(self.proc.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                pass
        return total

    def worker_peak_rss(self) -> dict[int, int]:
        assert self.proc is not None
        out = {}
        for pid in children(self.proc.pid):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out[pid] = int(line.split()[1]) * 1024
        return out


def ttfb(base: str, path: str, count: int, pause: float = 0.0) -> list[float]:
    """Seconds to the reply's headers, on one keep-alive connection (a new one after each
    pause: gunicorn closes an idle one after 2 s)."""
    address = urlsplit(base)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=120)
    out = []
    for _ in range(count):
        if pause:
            conn.close()
            conn.connect()
        started = time.perf_counter()
        conn.request("GET", path)
        reply = conn.getresponse()
        out.append(time.perf_counter() - started)
        reply.read()
        if reply.status != 200:
            raise RuntimeError(f"GET {path}: {reply.status}")
        time.sleep(pause)
    conn.close()
    return out


def fill(stack: Stack, http: requests.Session) -> tuple[str, list[str]]:
    """100,000 jobs in 10 batches; the first is the one measured. Returns (batch, ids)."""
    from sqlalchemy import text

    from shared.db import engine_for

    ids = [http.post(f"{stack.base}/v1/images", files={"file": ("x.png", png(i))}).json()["id"]
           for i in range(2)]
    job = {"content": ids[0], "styles": [ids[1]], "params": TINY}
    batches = []
    for n in range(10):
        reply = http.post(f"{stack.base}/v1/batches", timeout=300,
                          json={"name": f"batch {n}", "jobs": [job] * BATCH_JOBS})
        reply.raise_for_status()
        batches.append(reply.json()["id"])
    engine = engine_for(stack.url)
    with engine.begin() as conn:  # what workers would have done, in bulk
        conn.execute(text("UPDATE jobs SET status='succeeded', progress=1 WHERE id IN "
                          "(SELECT id FROM jobs ORDER BY id LIMIT 30000)"))
        conn.execute(text("UPDATE jobs SET status='failed', error='out of memory' WHERE id IN "
                          "(SELECT id FROM jobs WHERE status='queued' ORDER BY id LIMIT 5000)"))
        conn.execute(text("UPDATE jobs SET status='running', started_at=created_at, "
                          "progress=0.1 WHERE id IN (SELECT id FROM jobs WHERE batch_id=:b "
                          "AND status='queued' ORDER BY id LIMIT 4)"), {"b": batches[0]})
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE jobs"))
    redis_conn = redis.Redis.from_url(stack.env["REDIS_URL"])
    for key in redis_conn.scan_iter(f"{stack.env['STYLEFARM_QUEUE_PREFIX']}*"):
        redis_conn.delete(key)  # 100,000 messages nobody will take
    jobs = http.get(f"{stack.base}/v1/jobs?batch={batches[0]}&limit=1000").json()["items"]
    return batches[0], [j["id"] for j in jobs]


def progress_player(stack: Stack, batch_id: str, stop: threading.Event) -> None:
    """Plays the part of a worker: the 4 running jobs move every 0.5 s."""
    from sqlalchemy import text

    from shared.db import engine_for

    engine = engine_for(stack.url)
    step = 0
    while not stop.wait(0.5):
        step += 1
        with engine.begin() as conn:
            conn.execute(text("UPDATE jobs SET progress=:p, heartbeat_at=CURRENT_TIMESTAMP "
                              "WHERE batch_id=:b AND status='running'"),
                         {"p": (step % 100) / 100, "b": batch_id})


def query_ms(url: str, count: int = 20) -> tuple[float, float]:
    """Database time (median, client side) of /metrics's count of jobs from the triggers'
    table, and of the GROUP BY over every job that it replaces."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from shared import jobcounts
    from shared.db import engine_for
    from shared.models import Job

    def median_ms(run: Callable[[Session], object]) -> float:
        times = []
        with Session(engine_for(url)) as session:
            for _ in range(count):
                started = time.perf_counter()
                run(session)
                session.commit()
                times.append(time.perf_counter() - started)
        return statistics.median(times) * 1000

    return (median_ms(jobcounts.counts),
            median_ms(lambda s: s.execute(select(Job.status, Job.priority, func.count())
                                          .group_by(Job.status, Job.priority)).all()))


def pages(stack: Stack, http: requests.Session, batch_id: str,
          ids: list[str]) -> list[tuple[str, str]]:
    n = 20
    cursor = _cursor_at(http, stack.base, batch_id, 5000)  # the API's and the grid's cursors
    rows = []
    for name, path in (
            ("batch page (first 60 jobs)", f"/batches/{batch_id}"),
            ("job grid page at job 5,000 (keyset)", f"/batches/{batch_id}?cursor={cursor}"),
            ("job grid filtered: failed", f"/batches/{batch_id}?status=failed"),
            ("job page", f"/jobs/{ids[0]}"),
            ("batches list (first 20)", "/"),
            ("live fragment of the batch page", f"/ui/live/batch?id={batch_id}"),
            ("/metrics, cache hit", "/metrics")):
        times = ttfb(stack.base, path, n)
        rows.append((f"TTFB {name}", f"median {statistics.median(times) * 1000:.1f} ms, "
                                     f"p95 {percentile(times, 0.95) * 1000:.1f} ms"))
    cold = ttfb(stack.base, "/metrics", 6, pause=2.2)  # past the 2 s cache each time
    rows.append(("TTFB /metrics, cache miss (100,000 jobs)",
                 f"median {statistics.median(cold) * 1000:.1f} ms, max {max(cold) * 1000:.1f} ms"))
    deltas, group_by = query_ms(stack.url)
    rows.append(("  DB time: count from the triggers' table / GROUP BY jobs",
                 f"{deltas:.2f} / {group_by:.1f} ms ({group_by / deltas:.0f}x)"))
    return rows


def _cursor_at(http: requests.Session, base: str, batch_id: str, position: int) -> str:
    url = f"/v1/jobs?batch={batch_id}&limit=1000"
    for _ in range(position // 1000):
        url = http.get(f"{base}{url}").json()["next"]
    return url.split("cursor=")[1]


def _dashboard_client(base: str, paths: list[str], until: float, out: list[float]) -> None:
    address = urlsplit(base)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    etags: dict[str, str] = {}
    rng = random.Random(len(out))
    time.sleep(rng.uniform(0, 1))
    while time.time() < until:
        for path in paths:
            started = time.perf_counter()
            conn.request("GET", path, headers={"If-None-Match": etags[path]}
                         if path in etags else {})
            reply = conn.getresponse()
            reply.read()
            out.append(time.perf_counter() - started)
            if reply.getheader("ETag"):
                etags[path] = reply.getheader("ETag")
        time.sleep(1.0)
    conn.close()


def _dashboard_process(base: str, views: list[list[str]], until: float,
                       queue: multiprocessing.Queue) -> None:
    """One client process: a thread per simulated dashboard."""
    samples: list[float] = []
    with ThreadPoolExecutor(max_workers=len(views)) as pool:
        list(pool.map(lambda paths: _dashboard_client(base, paths, until, samples), views))
    queue.put(samples)


def live(stack: Stack, batch_id: str, ids: list[str], seconds: float) -> list[tuple[str, str]]:
    views = ([[f"/ui/live/batch?id={batch_id}"]] * 50 + [["/ui/live/batches"]] * 30
             + [[f"/ui/live/job?id={ids[n]}"] for n in range(20)])
    rows = []
    for with_clients in (False, True):
        queue: multiprocessing.Queue = multiprocessing.Queue()
        until = time.time() + seconds
        procs = []
        if with_clients:
            procs = [multiprocessing.Process(target=_dashboard_process,
                                             args=(stack.base, views[i::2], until, queue))
                     for i in range(2)]
            for proc in procs:
                proc.start()
        cpu = stack.cpu_seconds()
        samples = [p[0] for p in poll_latency(stack.base, ids[:1000], 32, seconds, 0.25)]
        used = stack.cpu_seconds() - cpu
        dash = [s for _ in procs for s in queue.get()]
        for proc in procs:
            proc.join()
        label = "with 100 dashboards" if with_clients else "no dashboards"
        rows.append((f"{label}: API CPU over {seconds:.0f} s",
                     f"{used:.1f} s ({used / seconds * 100:.0f} % of a core)"))
        rows.append((f"{label}: GET job p50 / p99 (32 pollers, 4/s each)",
                     f"{percentile(samples, 0.5) * 1000:.1f} / "
                     f"{percentile(samples, 0.99) * 1000:.1f} ms"))
        if dash:
            rows.append((f"{label}: live fragment p50 / p99 ({len(dash) / seconds:.0f}/s)",
                         f"{percentile(dash, 0.5) * 1000:.1f} / "
                         f"{percentile(dash, 0.99) * 1000:.1f} ms"))
    return rows


def archive(stack: Stack, http: requests.Session, results: int = 1000) -> list[tuple[str, str]]:
    """A batch of `results` succeeded jobs, downloaded as a zip: the API's peak memory."""
    from PIL import Image
    from sqlalchemy import text

    from shared.db import engine_for
    from shared.storage import Storage, atomic_write

    ids = [http.post(f"{stack.base}/v1/images", files={"file": ("x.png", png(i + 7))}).json()["id"]
           for i in range(2)]
    job = {"content": ids[0], "styles": [ids[1]], "params": TINY}
    batch = http.post(f"{stack.base}/v1/batches", json={"name": "zip", "jobs": [job] * results},
                      timeout=300).json()["id"]
    storage = Storage(Path(stack.env["STYLEFARM_DATA_DIR"]))
    engine = engine_for(stack.url)
    with engine.begin() as conn:
        job_ids = [r[0] for r in conn.execute(text("SELECT id FROM jobs WHERE batch_id=:b"),
                                              {"b": batch})]
        total = 0
        for n, job_id in enumerate(job_ids):
            out = io.BytesIO()
            Image.effect_noise((192, 192), 40 + n % 50).convert("RGB").save(out, "PNG")
            total += len(out.getvalue())
            path = atomic_write(storage.result_path(job_id), out.getvalue())
            conn.execute(text("UPDATE jobs SET status='succeeded', progress=1, result_path=:p "
                              "WHERE id=:j"), {"p": storage.relative(path), "j": job_id})
    before = stack.worker_peak_rss()
    started = time.perf_counter()
    size = 0
    with http.get(f"{stack.base}/v1/batches/{batch}/archive", stream=True, timeout=600) as reply:
        reply.raise_for_status()
        for chunk in reply.iter_content(1 << 16):
            size += len(chunk)
    took = time.perf_counter() - started
    after = stack.worker_peak_rss()
    grown = max(after[pid] - before.get(pid, 0) for pid in after)
    return [(f"zip of {results} results: size, time", f"{size / 2**20:.1f} MiB in {took:.1f} s "
             f"(results {total / 2**20:.1f} MiB)"),
            ("  API worker peak RSS: before / after / growth",
             f"{max(before.values()) / 2**20:.0f} / {max(after.values()) / 2**20:.0f} / "
             f"{grown / 2**20:.1f} MiB"),
            ("  growth / zip size (an in-memory zip holds >= 1.0)",
             f"{grown / size:.3f}")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="",
                        help="also PostgreSQL: this database's tables are DROPPED first")
    parser.add_argument("--sections", default="pages,live,archive")
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    sections = set(args.sections.split(","))

    tmp = Path(tempfile.mkdtemp(prefix="stylefarm-dashbench-"))
    port = free_port()
    redis_proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--save", "",
                                   "--appendonly", "no"], stdout=subprocess.DEVNULL)
    redis_url = f"redis://127.0.0.1:{port}/0"
    while not redis_answers(redis_url):
        time.sleep(0.05)
    databases = [("SQLite", f"sqlite:///{tmp / 'sqlite' / 'stylefarm.db'}")]
    if args.database_url:
        databases.append(("PostgreSQL", args.database_url))
    tables: dict[str, list[tuple[str, str]]] = {}
    try:
        for name, url in databases:
            workdir = tmp / name.lower()
            (workdir / "data").mkdir(parents=True, exist_ok=True)
            if url.startswith("postgresql"):
                empty_database(url)
            stack = Stack(url, workdir, redis_url)
            stack.start()
            stop = threading.Event()
            rows: list[tuple[str, str]] = []
            try:
                http = requests.Session()
                if sections & {"pages", "live"}:
                    batch_id, ids = fill(stack, http)
                    player = threading.Thread(target=progress_player, args=(stack, batch_id, stop))
                    player.start()
                    if "pages" in sections:
                        rows += pages(stack, http, batch_id, ids)
                    if "live" in sections:
                        rows += live(stack, batch_id, ids, args.seconds)
                    stop.set()
                    player.join()
                if "archive" in sections:
                    rows += archive(stack, http)
            finally:
                stop.set()
                stack.stop()
            tables[name] = rows
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=15)

    names = [name for name, _ in databases]
    measures = [m for m, _ in tables[names[0]]]
    width = max(len(m) for m in measures)
    print(f"\nAPI: gunicorn gthread 2 workers x 4 threads; {os.cpu_count()} CPUs")
    print(" | ".join(["measure".ljust(width), *names]))
    print("-+-".join(["-" * width, *("-" * 34 for _ in names)]))
    for n, measure in enumerate(measures):
        values = [tables[name][n][1] if n < len(tables[name]) else "" for name in names]
        print(" | ".join([measure.ljust(width), *values]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
