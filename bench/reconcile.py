"""What a reconciler pass costs with 10,000 queued jobs: messages sent, and milliseconds.

    uv run python bench/reconcile.py [--jobs 10000] [--database-url URL] [--redis-url URL]

Inserts the jobs straight into the database (--database-url, whose tables are dropped
first, so never name a database that tests use; else SQLite in a temp dir), sends their
messages as the API does, then times: a plain pass (every few seconds), an audit pass
with every message in place (once a minute), an audit after Redis lost every message
(the storm it must send once), and the plain pass again. Prints a table.
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
import os
import tempfile
import time
import uuid

import redis
from sqlalchemy import insert

from cli.procs import empty_database
from shared.db import make_engine, session_scope
from shared.migrate import upgrade
from shared.models import Image, Job
from shared.queue import enqueue_jobs, make_celery, render_queues
from shared.reconcile import Reconciler
from shared.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL",
                                                               "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    url = args.database_url or f"sqlite:///{workdir / 'stylefarm.db'}"
    if args.database_url:
        empty_database(url)
    upgrade(url)
    settings = Settings().with_(database_url=url, redis_url=args.redis_url, data_dir=workdir,
                                queue_prefix=f"bench-rec-{uuid.uuid4().hex[:6]}.")
    app = make_celery(settings)
    ids = insert_jobs(url, args.jobs)
    enqueue_jobs([(job_id, 0) for job_id in ids], app=app)
    reconciler = Reconciler(settings, app)
    client = redis.Redis.from_url(args.redis_url)
    rows = []
    try:
        client.set(reconciler.audit_key, "1", ex=3600)  # as between two audits
        rows.append(timed("plain pass, all messages in Redis", reconciler.run_pass))
        rows.append(timed("audit pass, all messages in Redis",
                          lambda: reconciler.run_pass(audit=True)))
        for queue in render_queues(settings):
            client.delete(queue)
        rows.append(timed("audit pass after Redis lost every message",
                          lambda: reconciler.run_pass(audit=True)))
        rows.append(timed("plain pass after that", reconciler.run_pass))
    finally:
        for key in client.scan_iter(f"{settings.queue_prefix}*"):
            client.delete(key)
    kind = "PostgreSQL" if url.startswith("postgres") else "SQLite"
    print(f"\nreconciler pass, {args.jobs} queued jobs, {kind}\n")
    print("| pass | messages sent | ms |\n|---|---|---|")
    for name, sent, ms in rows:
        print(f"| {name} | {sent} | {ms:.0f} |")


def timed(name: str, run) -> tuple[str, int, float]:
    started = time.perf_counter()
    report = run()
    return name, len(report.resent), (time.perf_counter() - started) * 1000


def insert_jobs(url: str, count: int) -> list[str]:
    ids = [uuid.uuid4().hex for _ in range(count)]
    engine = make_engine(url)
    with session_scope(engine) as session:
        session.add(Image(id="b" * 64, width=32, height=32, format="PNG", byte_size=1))
        session.flush()
        session.execute(insert(Job), [
            {"id": job_id, "content_image_id": "b" * 64, "styles": [{"image": "b" * 64}],
             "params": {"size": 32}, "status": "queued", "priority": 0} for job_id in ids])
    engine.dispose()
    return ids


if __name__ == "__main__":
    main()
