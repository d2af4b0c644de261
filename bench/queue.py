"""Queue and API benchmark: prints a table. Not a test.

    uv run python bench/queue.py [--jobs 10000] [--pollers 32] [--seconds 20]

Starts what a farm runs, on this machine: a Redis (REDIS_URL if it answers, else a
private redis-server), the database (DATABASE_URL, else SQLite in a temp dir), the
API under gunicorn (`stylefarm api`), and one worker (`stylefarm worker`, CPU). Then:

1. accept a batch of --jobs jobs (one POST /v1/batches, client wall time; goal <= 2 s);
2. GET /v1/jobs/<id> latency with --pollers concurrent pollers, each polling every
   --interval seconds, for --seconds (goal p99 <= 20 ms). Each poller starts at a random
   point of its interval, as independent clients do; a second run starts them all at
   once and keeps them in lockstep, the worst case (a burst of --pollers requests
   every interval), shown for reference;
3. submit-to-start on an idle worker (job created_at -> started_at, as recorded);
4. the gap between one job's end and the next one's start on a busy worker (tiny jobs;
   goal <= 100 ms).
"""

# ruff: noqa: E402 - the path fix below must run before the imports
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path, and this file's name
# would shadow the standard library's `queue` (which redis imports). Use the repo root.
ROOT = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)

import argparse
import http.client
import io
import itertools
import multiprocessing
import os
import random
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from datetime import datetime
from urllib.parse import urlsplit

import requests

from cli.services import free_port, redis_answers, redis_server_binary

TINY = {"size": 16, "min_size": 16, "iterations": [1]}


def png(seed: int) -> bytes:
    from PIL import Image

    image = Image.effect_noise((32, 32), 20 + seed).convert("RGB")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _poller(base: str, ids: list[str], until: float, interval: float, phase: float,
            out: list[tuple[float, float]]) -> None:
    """Poll on a fixed schedule (every `interval` from `phase`), as a status loop does.

    One keep-alive connection per poller, through the standard library's http.client: a
    load generator should cost the shared CPU as little as it can (`requests` takes
    about three times as much per call), so that what is measured is the server.
    """
    address = urlsplit(base)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    next_at = time.perf_counter() + phase
    n = 0
    while time.time() < until:
        time.sleep(max(0.0, next_at - time.perf_counter()))
        started = time.perf_counter()
        conn.request("GET", f"/v1/jobs/{ids[n % len(ids)]}")
        response = conn.getresponse()
        response.read()
        took = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"GET job answered {response.status}")
        out.append((took, _server_seconds(response.getheader("Server-Timing", ""))))
        n += 1
        next_at = max(next_at + interval, time.perf_counter())
    conn.close()


def _server_seconds(header: str) -> float:
    """The app's own time from `Server-Timing: app;dur=MS`."""
    for part in header.split(";"):
        if part.startswith("dur="):
            return float(part[4:]) / 1000
    return float("nan")


def _poll_process(base: str, ids: list[str], phases: list[float], until: float,
                  interval: float, queue: multiprocessing.Queue) -> None:
    samples: list[tuple[float, float]] = []
    workers = [threading.Thread(target=_poller, args=(base, ids, until, interval, phase,
                                                      samples))
               for phase in phases]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.put(samples)


def poll_latency(base: str, ids: list[str], pollers: int, seconds: float, interval: float,
                 lockstep: bool = False) -> list[tuple[float, float]]:
    """Pollers spread over 4 client processes, so the client's GIL is not what we measure.

    Independent pollers start at random points of their interval (seeded, so runs
    compare); `lockstep` starts all of them at once, so every round is one burst.
    """
    processes = min(4, pollers)
    rng = random.Random(0)
    phases = [0.0 if lockstep else rng.uniform(0, interval) for _ in range(pollers)]
    until = time.time() + seconds
    queue: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_poll_process, args=(
        base, ids, phases[i::processes], until, interval, queue)) for i in range(processes)]
    for proc in procs:
        proc.start()
    samples = [s for _ in procs for s in queue.get()]
    for proc in procs:
        proc.join()
    return samples


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--pollers", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--interval", type=float, default=0.25,
                        help="seconds between one poller's requests (default %(default)s)")
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--api-threads", type=int, default=4)
    parser.add_argument("--busy-jobs", type=int, default=20)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="stylefarm-bench-"))
    children: list[subprocess.Popen] = []
    redis_url = os.environ.get("REDIS_URL", "")
    if not (redis_url and redis_answers(redis_url)):
        port = free_port()
        children.append(subprocess.Popen(
            [redis_server_binary(), "--port", str(port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL))
        redis_url = f"redis://127.0.0.1:{port}/0"
        while not redis_answers(redis_url):
            time.sleep(0.05)
    env = {**os.environ, "REDIS_URL": redis_url, "STYLEFARM_DATA_DIR": str(tmp / "data"),
           "STYLEFARM_QUEUE_PREFIX": f"bench-{uuid.uuid4().hex[:6]}.", "STYLEFARM_DEVICE": "cpu",
           "PYTHONPATH": str(ROOT)}
    os.environ.update(env)
    from shared.migrate import upgrade
    from shared.settings import get_settings

    upgrade(get_settings().effective_database_url)
    api_port = free_port()
    base = f"http://127.0.0.1:{api_port}"
    cli = [sys.executable, "-m", "cli.main"]
    rows: list[tuple[str, str, str]] = []
    try:
        children.append(subprocess.Popen(
            [*cli, "api", "--port", str(api_port), "--workers", str(args.api_workers),
             "--threads", str(args.api_threads), "--no-migrate"], env=env, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=(tmp / "api.log").open("wb")))
        http = requests.Session()
        while True:
            try:
                http.get(f"{base}/healthz", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        ids = [http.post(f"{base}/v1/images", files={"file": ("x.png", png(i))}).json()["id"]
               for i in range(2)]
        job = {"content": ids[0], "styles": [ids[1]], "params": TINY}

        # 1. accept a big batch (no worker yet: the messages wait in Redis)
        body = {"jobs": [job] * args.jobs}
        started = time.perf_counter()
        reply = http.post(f"{base}/v1/batches", json=body, timeout=120)
        accept = time.perf_counter() - started
        reply.raise_for_status()
        batch_id = reply.json()["id"]
        rows.append((f"accept a {args.jobs}-job batch", f"{accept * 1000:.0f} ms", "<= 2000 ms"))
        page = http.get(f"{base}/v1/jobs?batch={batch_id}&limit=1000").json()["items"]
        poll_ids = [j["id"] for j in page]
        http.post(f"{base}/v1/batches/{batch_id}/cancel").raise_for_status()

        # 2. status polling latency: independent pollers, then the lockstep worst case
        for lockstep in (False, True):
            pairs = poll_latency(base, poll_ids, args.pollers, args.seconds, args.interval,
                                 lockstep)
            samples, in_app = [p[0] for p in pairs], [p[1] for p in pairs]
            rate = len(samples) / args.seconds
            how = "in lockstep" if lockstep else "at random phases"
            rows.append((f"GET job, {args.pollers} pollers {how}, every {args.interval}s "
                         f"({rate:.0f}/s)", f"p50 {percentile(samples, 0.5) * 1000:.1f} ms, "
                         f"p99 {percentile(samples, 0.99) * 1000:.1f} ms",
                         "" if lockstep else "p99 <= 20 ms"))
            rows.append(("  of which in the app (Server-Timing)",
                         f"p50 {percentile(in_app, 0.5) * 1000:.1f} ms, "
                         f"p99 {percentile(in_app, 0.99) * 1000:.1f} ms", ""))

        # 3. submit -> start on an idle worker
        children.append(subprocess.Popen(
            [*cli, "worker", "--loglevel", "warning"], env=env, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=(tmp / "worker.log").open("wb")))

        def wait_done(job_id: str) -> dict:
            while (j := http.get(f"{base}/v1/jobs/{job_id}").json())["status"] not in (
                    "succeeded", "failed", "canceled"):
                time.sleep(0.05)
            return j

        wait_done(http.post(f"{base}/v1/jobs", json=job).json()["id"])  # warm-up
        delays = []
        for _ in range(5):
            time.sleep(1.0)  # the worker is idle, blocked on the broker
            done = wait_done(http.post(f"{base}/v1/jobs", json=job).json()["id"])
            delays.append((ts(done["started_at"]) - ts(done["created_at"])).total_seconds())
        rows.append(("submit -> start, idle worker (median of 5)",
                     f"{statistics.median(delays) * 1000:.0f} ms "
                     f"(max {max(delays) * 1000:.0f})", ""))

        # 4. end -> next start on a busy worker
        batch = http.post(f"{base}/v1/batches", json={"jobs": [job] * args.busy_jobs}).json()
        while not http.get(f"{base}/v1/batches/{batch['id']}").json()["finished"]:
            time.sleep(0.2)
        jobs = http.get(f"{base}/v1/jobs?batch={batch['id']}&limit=1000").json()["items"]
        jobs.sort(key=lambda j: j["started_at"])
        gaps = [(ts(b["started_at"]) - ts(a["finished_at"])).total_seconds()
                for a, b in itertools.pairwise(jobs)]
        renders = [(ts(j["finished_at"]) - ts(j["started_at"])).total_seconds() for j in jobs]
        rows.append((f"job end -> next start, busy worker ({len(gaps)} gaps)",
                     f"median {statistics.median(gaps) * 1000:.0f} ms, "
                     f"max {max(gaps) * 1000:.0f} ms", "<= 100 ms"))
        rows.append(("  (render time of one tiny job, median)",
                     f"{statistics.median(renders) * 1000:.0f} ms", ""))
    finally:
        for child in reversed(children):
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()

    width = max(len(r[0]) for r in rows)
    print(f"\nAPI: gunicorn gthread, {args.api_workers} workers x {args.api_threads} threads; "
          f"database {get_settings().effective_database_url.split('://')[0]}; "
          f"{os.cpu_count()} CPUs")
    print(f"{'measure'.ljust(width)} | result{' ' * 34}| goal")
    print(f"{'-' * width}-+-{'-' * 40}+------------")
    for name, value, goal in rows:
        print(f"{name.ljust(width)} | {value.ljust(40)}| {goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
