"""Chaos benchmark: a farm under faults, and what became of every job. A table, not a test.

    uv run python bench/chaos.py [--jobs 100] [--workers 3] [--kills 8] [--every 3] [--seed 8]

PostgreSQL (--database-url, else BENCH_DATABASE_URL, else the local `stylefarm_bench`:
its tables are dropped first, so never name a database that tests use), its own
redis-server, the API (`stylefarm api`) and --workers `stylefarm worker` processes, on
the CPU. It submits --jobs small jobs, then every --every seconds kills a random worker's
whole process group (and starts it again) or only its pool child; then restarts Redis
once without persistence (SIGKILL, the data gone) and once with it (append-only file,
SIGTERM); then waits for the farm to drain. It reports succeeded, failed, stuck (still
active after --drain seconds), duplicated (a job whose success was recorded by more than
one worker process), attempts, result files, and the time from the last fault to the
last job's end. Goal: 0 lost, 0 stuck, 0 duplicates.
"""

# ruff: noqa: E402 - the path fix below must run before the imports
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ comes first on sys.path, and bench/queue.py would shadow the
# standard library's `queue`. Use the repo root instead.
ROOT = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)

import argparse
import collections
import io
import os
import random
import signal
import tempfile
import time
import uuid
from datetime import UTC, datetime

import requests
from PIL import Image
from sqlalchemy import select, text

from cli.procs import Api, RedisServer, Worker, children, empty_database
from shared.db import make_engine
from shared.models import ACTIVE, Job

DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/stylefarm_bench"
# One torch thread per worker: three CPU workers share the machine's cores.
ENV = {"STYLEFARM_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "STYLEFARM_LEASE_SECONDS": "3",
       "STYLEFARM_RECONCILE_INTERVAL": "1", "STYLEFARM_RECONCILE_AUDIT_INTERVAL": "10",
       "STYLEFARM_PROGRESS_INTERVAL": "0.2", "STYLEFARM_MAX_ATTEMPTS": "5"}


def png(seed: int, size: tuple[int, int]) -> bytes:
    image = Image.effect_noise(size, 40 + seed).convert("RGB")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kills", type=int, default=8, help="worker or child kills")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between faults")
    parser.add_argument("--seed", type=int, default=8, help="which workers, which faults")
    parser.add_argument("--drain", type=float, default=600, help="hang guard, seconds")
    parser.add_argument("--database-url",
                        default=os.environ.get("BENCH_DATABASE_URL") or DEFAULT_DB)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="chaos-"))
    reset(args.database_url)
    redis = RedisServer(root / "redis")
    redis.start(persist=False)
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT), "DATABASE_URL": args.database_url,
           "REDIS_URL": redis.url, "STYLEFARM_DATA_DIR": str(root / "data"),
           "STYLEFARM_QUEUE_PREFIX": f"chaos-{uuid.uuid4().hex[:6]}."}
    api = Api(env, root / "api.log")
    workers = [Worker(env, root / f"w{n}") for n in range(args.workers)]
    log = collections.Counter()
    try:
        api.start()
        for n, worker in enumerate(workers):
            (root / f"w{n}").mkdir()
            worker.start()
        job_ids = submit(api.url, args.jobs, args.database_url)
        print(f"chaos: {len(job_ids)} jobs submitted; faults every {args.every} s",
              file=sys.stderr)
        rng = random.Random(args.seed)
        for _ in range(args.kills):
            time.sleep(args.every)
            log[kill_one(rng, workers)] += 1
        time.sleep(args.every)
        active = {"kills": active_jobs(args.database_url, job_ids)}
        redis.restart(persist=True, how=signal.SIGKILL)  # had no AOF: everything is gone
        log["redis restart, no persistence"] += 1
        active["redis restart, no persistence"] = active_jobs(args.database_url, job_ids)
        time.sleep(args.every)
        active["redis restart, append-only"] = active_jobs(args.database_url, job_ids)
        redis.restart(persist=True, how=signal.SIGTERM)  # AOF on: the data comes back
        log["redis restart, append-only"] += 1
        last_fault = datetime.now(UTC)
        drain(args.database_url, job_ids, args.drain)
        report(args.database_url, job_ids, root, last_fault, log, active, args)
    finally:
        for worker in workers:
            worker.stop()
        if api.proc is not None and api.proc.poll() is None:
            api.kill()
        redis.stop(signal.SIGKILL)
    return 0


def reset(url: str) -> None:
    from shared.migrate import upgrade

    empty_database(url)
    upgrade(url)


def submit(api: str, count: int, url: str) -> list[str]:
    upload = [requests.post(f"{api}/v1/images", files={"file": ("x.png", png(n, size))},
                            timeout=30).json()["id"]
              for n, size in enumerate([(48, 36), (40, 40), (36, 48)])]
    jobs = [{"content": upload[n % 2], "styles": [upload[2]],
             "params": {"size": 32 + 8 * (n % 3), "min_size": 32, "iterations": [12]}}
            for n in range(count)]
    batch = requests.post(f"{api}/v1/batches", json={"name": "chaos", "jobs": jobs}, timeout=60)
    batch.raise_for_status()
    engine = make_engine(url, pooled=False)
    with engine.connect() as conn:
        return list(conn.scalars(select(Job.id).where(Job.batch_id == batch.json()["id"])))


def kill_one(rng: random.Random, workers: list[Worker]) -> str:
    worker = rng.choice(workers)
    pool = children(worker.proc.pid) if worker.proc else []
    if pool and rng.random() < 0.5:
        os.kill(rng.choice(pool), signal.SIGKILL)
        return "pool child SIGKILLed"
    worker.kill()
    worker.start(wait=False)
    return "worker group SIGKILLed (and restarted)"


def active_jobs(url: str, job_ids: list[str]) -> int:
    """How many of `job_ids` are not finished yet."""
    engine = make_engine(url, pooled=False)
    with engine.connect() as conn:
        return conn.scalar(select(text("count(*)")).select_from(Job).where(
            Job.id.in_(job_ids), Job.status.in_([status.value for status in ACTIVE])))


def drain(url: str, job_ids: list[str], guard: float) -> None:
    deadline = time.monotonic() + guard
    while active_jobs(url, job_ids) and time.monotonic() < deadline:
        time.sleep(1)


def report(url: str, job_ids: list[str], root: Path, last_fault: datetime,
           faults: collections.Counter, active: dict[str, int],
           args: argparse.Namespace) -> None:
    engine = make_engine(url, pooled=False)
    with engine.connect() as conn:
        rows = conn.execute(select(Job.id, Job.status, Job.attempts, Job.finished_at)
                            .where(Job.id.in_(job_ids))).all()
    status = collections.Counter(row.status for row in rows)
    logs = "".join(path.read_text(errors="replace") for path in root.glob("w*/*.log"))
    duplicated = sum(logs.count(f"job {row.id}: succeeded") > 1 for row in rows)
    results = root / "data" / "results"
    files = collections.Counter(p.name.split(".")[0].lstrip(".") for p in results.iterdir())
    attempts = collections.Counter(row.attempts for row in rows)
    ends = [row.finished_at for row in rows if row.finished_at is not None]
    last_end = max(ends).replace(tzinfo=UTC) if ends else None
    print(f"\nchaos: {len(job_ids)} jobs, {args.workers} workers, PostgreSQL; faults: "
          + ", ".join(f"{n}× {what}" for what, n in faults.items()) + "\n")
    print("| measure | value |\n|---|---|")
    print("| jobs not finished after the kills / at each Redis restart | "
          + " / ".join(str(n) for n in active.values()) + " |")
    print(f"| succeeded | {status['succeeded']} |")
    print(f"| failed | {status['failed']} |")
    print(f"| stuck (still active after the drain guard) | "
          f"{sum(status[s.value] for s in ACTIVE)} |")
    print(f"| lost (no row) | {len(job_ids) - len(rows)} |")
    print(f"| duplicated (success recorded by 2+ processes) | {duplicated} |")
    print("| attempts: jobs per count | "
          + ", ".join(f"{k}: {v}" for k, v in sorted(attempts.items())) + " |")
    print(f"| result files (jobs with exactly one / more / stray temp) | "
          f"{sum(files[j] == 1 for j in job_ids)} / {sum(files[j] > 1 for j in job_ids)} / "
          f"{len(list(results.glob('.*.tmp')))} |")
    if last_end is not None:
        print(f"| last fault → last job's end | {(last_end - last_fault).total_seconds():.1f} s |")


if __name__ == "__main__":
    sys.exit(main())
