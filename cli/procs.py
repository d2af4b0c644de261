"""Real farm processes started from Python: a restartable redis-server, `stylefarm api`,
`stylefarm worker`, each in its own process group so that a fault can kill it whole.

The fault tests (tests/queue), the chaos benchmark and the GPU script drive farms of
these; nothing here is used by a farm itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from cli.services import free_port, redis_answers, redis_server_binary, wait_for_api

ROOT = Path(__file__).resolve().parents[1]


class Worker:
    """`stylefarm worker` as a child in its own process group (so it can be killed whole)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.log: Path | None = None
        self.count = 0

    def start(self, wait: bool = True) -> None:
        self.count += 1
        self.log = self.log_dir / f"worker-{self.count}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "--name", f"test{self.count}@%h"],
            cwd=ROOT, env=self.env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 180
        while wait and b" ready." not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:] if self.log else ""

    def kill(self) -> None:
        """SIGKILL the whole worker: main process and the child running the job."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        stop_group(self.proc, grace=15)


class RedisServer:
    """A redis-server of our own on a fixed port, restartable with or without an AOF."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self, *, persist: bool) -> None:
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "yes" if persist else "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not redis_answers(self.url):
            assert self.proc.poll() is None and time.monotonic() < deadline, "no redis-server"
            time.sleep(0.05)

    def stop(self, how: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(how)
            self.proc.wait(timeout=30)

    def restart(self, *, persist: bool, how: int = signal.SIGTERM) -> None:
        self.stop(how)
        if not persist:
            for stale in self.workdir.glob("appendonly*"):  # a restart without an AOF
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        self.start(persist=persist)


class Api:
    """`stylefarm api` in its own process group."""

    def __init__(self, env: dict[str, str], log: Path, workers: int = 1) -> None:
        self.env, self.log, self.workers = env, log, workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "api", "--port", str(self.port),
             "--workers", str(self.workers), "--threads", "4"], cwd=ROOT, env=self.env,
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        assert wait_for_api(self.url, self.proc, 300), self.log.read_text()

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM: gunicorn stops its workers and removes its metrics folder."""
        stop_group(self.proc, grace=30)


def stop_group(proc: subprocess.Popen | None, grace: float) -> None:
    """SIGTERM a child's process group, SIGKILL it if it is not gone after `grace` s."""
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def children(pid: int) -> list[int]:
    """The direct children of `pid` (Linux /proc): a Celery worker's pool processes."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def empty_database(url: str) -> None:
    """Drop every stylefarm table (and Alembic's) so that a test or benchmark starts
    from nothing on a database it shares with earlier runs (PostgreSQL)."""
    from sqlalchemy import text

    from shared.db import make_engine
    from shared.models import Base

    engine = make_engine(url, pooled=False)
    with engine.begin() as conn:
        Base.metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
