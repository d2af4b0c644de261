"""`stylefarm api`, `stylefarm worker`, `stylefarm up`: the services, one or all at once.

Everything is configured by environment variables (shared.settings); options here only
set the few that differ between the processes of one machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
# gunicorn: gthread workers; threads cover I/O waits (SQLite, Redis), processes the GIL.
DEFAULT_API_WORKERS = 2
DEFAULT_API_THREADS = 4


# ------------------------------------------------------------------------------- api


def api_command(parser: argparse.ArgumentParser):
    """Serve the HTTP API under gunicorn."""
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="(default %(default)s)")
    parser.add_argument("--workers", type=int, default=DEFAULT_API_WORKERS,
                        help="gunicorn worker processes (default %(default)s)")
    parser.add_argument("--threads", type=int, default=DEFAULT_API_THREADS,
                        help="threads per worker process (default %(default)s)")
    parser.add_argument("--no-migrate", action="store_true",
                        help="do not bring the database schema up to date first")
    return run_api


def run_api(args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    from shared.settings import get_settings

    settings = get_settings()
    if not args.no_migrate:
        from shared.migrate import upgrade

        upgrade(settings.effective_database_url)
    metrics_dir = _metrics_dir()

    class Server(BaseApplication):  # gunicorn's documented way to embed it
        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", args.workers)
            self.cfg.set("threads", args.threads)
            self.cfg.set("worker_class", "api.server.JsonErrorWorker")  # gthread, JSON errors
            self.cfg.set("accesslog", None)
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("proc_name", "stylefarm-api")
            self.cfg.set("child_exit", _worker_exited)

        def load(self):  # in each gunicorn worker, before it serves
            from api import create_app

            app = create_app(settings)
            app.extensions["stylefarm"].warm()
            return app

    try:
        Server().run()
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _metrics_dir() -> str | None:
    """prometheus-client's multiprocess mode: every gunicorn worker writes its figures to
    files in PROMETHEUS_MULTIPROC_DIR, and a scrape of any worker merges them (api.metrics).
    Set before any worker imports prometheus_client; a fresh folder per server, so figures
    of an earlier run are not counted again. Returns the folder made here, if any."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    made = tempfile.mkdtemp(prefix="stylefarm-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
    return made


def _worker_exited(_server: object, worker: object) -> None:
    """gunicorn's child_exit: a dead worker's gauges leave the merged figures."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- worker


def worker_command(parser: argparse.ArgumentParser):
    """Run a render worker (Celery, prefork, one process per GPU)."""
    parser.add_argument("--gpus", default="",
                        help="comma-separated GPU indices: one worker per GPU, each seeing only "
                             "its own (CUDA_VISIBLE_DEVICES); default: as the environment says")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="processes per worker (default 1: one job per GPU at a time)")
    parser.add_argument("--queues", default="",
                        help="comma-separated levels to consume: webhooks,high,normal,low "
                             "(default all, in that order)")
    parser.add_argument("--name", default="", help="worker node name (default gpuN@host)")
    parser.add_argument("--loglevel", default="info")
    return run_worker


def celery_worker_argv(queues: Sequence[str], concurrency: int, name: str,
                       loglevel: str = "info") -> list[str]:
    """The Celery command line of one worker: prefork, fair scheduling, queues in order."""
    return [sys.executable, "-m", "celery", "-A", "worker.tasks", "worker",
            "--pool", "prefork", "--concurrency", str(concurrency), "-O", "fair",
            "--without-gossip", "--without-mingle",
            "-Q", ",".join(queues), "-n", name, "--loglevel", loglevel]


def _queues(levels: str) -> list[str]:
    from shared.queue import queue_name, worker_queues

    if not levels:
        return worker_queues()
    return [queue_name(level.strip()) for level in levels.split(",") if level.strip()]


def run_worker(args: argparse.Namespace) -> int:
    from shared.queue import render_queues

    queues = _queues(args.queues)
    if not set(queues) & set(render_queues()):
        os.environ["STYLEFARM_NO_WARM"] = "1"  # renders nothing: skip loading the model
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
    if len(gpus) <= 1:
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[0]
        name = args.name or (f"gpu{gpus[0]}@%h" if gpus else "worker@%h")
        argv = celery_worker_argv(queues, args.concurrency, name, args.loglevel)
        os.execve(sys.executable, argv, env)  # signals go straight to Celery
    children = []
    for gpu in gpus:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
        argv = celery_worker_argv(queues, args.concurrency, f"gpu{gpu}@%h", args.loglevel)
        children.append(subprocess.Popen(argv, env=env))
    return supervise(children)


# -------------------------------------------------------------------------------- up


def up_command(parser: argparse.ArgumentParser):
    """Run the whole stack on this machine: Redis, database, API and one worker."""
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("STYLEFARM_DATA_DIR", "stylefarm-data")),
                        help="images, results, SQLite database (default %(default)s)")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--gpus", default="", help="as for `stylefarm worker`")
    return run_up


def run_up(args: argparse.Namespace) -> int:
    from cli.services import LocalStack, Stopped

    stack = LocalStack(args.data_dir.expanduser().resolve(), args.host, args.port, args.gpus)
    try:
        with stack.running():
            print(f"stylefarm: API and dashboard on {stack.api_url}, broker {stack.redis_url}, "
                  f"data in {stack.data_dir}; Ctrl-C stops", file=sys.stderr, flush=True)
            return stack.wait()
    except (KeyboardInterrupt, Stopped):  # while starting: everything started is stopped
        return 0


# ------------------------------------------------------------------------- processes


def supervise(children: list[subprocess.Popen]) -> int:
    """Wait for the children; SIGTERM/SIGINT are passed on; one exiting stops the rest."""

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while all(child.poll() is None for child in children):
        time.sleep(0.5)
    forward(signal.SIGTERM, None)
    for child in children:
        child.wait()
    return max(abs(child.returncode or 0) for child in children)
