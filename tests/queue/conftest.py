"""A real farm for the queue tests: Redis, a migrated database, the API app, a Celery worker.

Nothing is mocked. The worker is a separate process (`stylefarm worker`: Celery,
prefork, concurrency 1) started once per database (per module); lease, visibility timeout and
webhook backoff are set short through the same environment variables a farm uses,
so worker death and retries happen in seconds. Each session gets its own queue
prefix, so parallel sessions on one Redis never take each other's messages.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from cli.procs import Worker, empty_database

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 2
# Waits are hang guards, never a measure of speed: a slow machine makes a test slower, not
# red. Under pytest-timeout's 300 s, so that the guard's message (with the log) is seen.
HANG_GUARD_S = 240
# Longer than any test job: a dead worker's job comes back through the reconciler (after
# the lease), not through Redis's visibility timeout, and the job time limits derived
# from it (the timeout less a second or two) never cut a job short on a slow machine.
VISIBILITY_S = 900
TEST_ENV = {
    "STYLEFARM_DEVICE": "cpu",
    # One torch thread per worker: the tests run two or three workers (and pytest) on a
    # couple of shared cores, where torch's default of one thread per core made a
    # 48 px job take 4x longer, spinning threads against each other.
    "OMP_NUM_THREADS": "1",
    "STYLEFARM_LEASE_SECONDS": str(LEASE_S),
    "STYLEFARM_VISIBILITY_TIMEOUT": str(VISIBILITY_S),
    "STYLEFARM_PROGRESS_INTERVAL": "0.1",
    "STYLEFARM_PREVIEW_INTERVAL": "0.3",
    "STYLEFARM_WEBHOOK_BACKOFF": "0.5",
    "STYLEFARM_WEBHOOK_MAX_RETRIES": "4",
    "STYLEFARM_MAX_ATTEMPTS": "3",
    "STYLEFARM_RECONCILE_INTERVAL": "0.5",
    "STYLEFARM_RECONCILE_AUDIT_INTERVAL": "3",
}


def picture(width: int, height: int, seed: int) -> bytes:
    """A small PNG with some structure (stripes and a disc), so the losses have work to do."""
    image = Image.new("RGB", (width, height), (40 * seed % 255, 90, 200 - 30 * seed % 200))
    draw = ImageDraw.Draw(image)
    for x in range(0, width, 4 + seed):
        draw.line([(x, 0), (x + height // 2, height)], fill=(250, 200 - 20 * seed, 30), width=2)
    draw.ellipse([width // 4, height // 4, 3 * width // 4, 3 * height // 4], fill=(10, 180, 90))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


class Farm:
    """The API (Flask test client of the real app), the database, storage and the worker."""

    def __init__(self, settings: Any, client: Any, worker: Worker) -> None:
        from shared.db import engine_for
        from shared.storage import Storage

        self.settings = settings
        self.client = client
        self.worker = worker
        self.db = engine_for(settings.effective_database_url)
        self.storage = Storage(settings.data_dir)

    def upload(self, data: bytes) -> str:
        reply = self.client.post("/v1/images", data={"file": (io.BytesIO(data), "x.png")},
                                 content_type="multipart/form-data")
        assert reply.status_code in (200, 201), reply.get_json()
        return reply.get_json()["id"]

    def submit(self, content: str, style: str, **params: Any) -> str:
        body = {"content": content, "styles": [style],
                "params": {"min_size": 32, "iterations": [3], **params}}
        reply = self.client.post("/v1/jobs", json=body)
        assert reply.status_code == 202, reply.get_json()
        return reply.get_json()["id"]

    def job(self, job_id: str) -> dict[str, Any]:
        reply = self.client.get(f"/v1/jobs/{job_id}")
        assert reply.status_code == 200, reply.get_json()
        return reply.get_json()

    def wait_for(self, what: Callable[[], Any], timeout: float = HANG_GUARD_S,
                 message: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = what()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{message} (after {timeout} s)\n--- worker log:\n"
                                     f"{self.worker.output()}")
            time.sleep(0.1)

    def wait_status(self, job_id: str, statuses: set[str],
                    timeout: float = HANG_GUARD_S) -> dict:
        return self.wait_for(lambda: (j := self.job(job_id))["status"] in statuses and j,
                             timeout, f"job {job_id} never reached {statuses}")


def _database_kinds() -> list[str]:
    return ["sqlite", "postgresql"] if os.environ.get("TEST_DATABASE_URL") else ["sqlite"]


@pytest.fixture(scope="module", params=_database_kinds())
def farm(request: pytest.FixtureRequest, redis_url: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    from api import create_app
    from shared import queue
    from shared.db import engine_for
    from shared.migrate import upgrade
    from shared.settings import get_settings

    root = tmp_path_factory.mktemp(f"farm-{request.param}")
    env = {**TEST_ENV, "STYLEFARM_DATA_DIR": str(root / "data"), "REDIS_URL": redis_url,
           "STYLEFARM_QUEUE_PREFIX": f"test-{uuid.uuid4().hex[:8]}.",
           "DATABASE_URL": os.environ["TEST_DATABASE_URL"] if request.param == "postgresql"
           else f"sqlite:///{root / 'data' / 'stylefarm.db'}"}
    if request.param == "postgresql":
        empty_database(env["DATABASE_URL"])
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the API's enqueue_jobs reads the environment's settings
    get_settings.cache_clear()
    queue._app.cache_clear()
    engine_for.cache_clear()
    settings = get_settings()
    upgrade(settings.effective_database_url)
    worker = Worker({**os.environ, "PYTHONPATH": str(ROOT)}, root)
    worker.start()
    app = create_app(settings)
    try:
        yield Farm(settings, app.test_client(), worker)
    finally:
        worker.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
        queue._app.cache_clear()
        engine_for.cache_clear()


@pytest.fixture(scope="module")
def images(farm: Farm) -> dict[str, str]:
    """Two contents (landscape, portrait) and two styles, uploaded."""
    return {
        "wide": farm.upload(picture(64, 48, 1)),
        "tall": farm.upload(picture(40, 56, 2)),
        "style1": farm.upload(picture(48, 48, 3)),
        "style2": farm.upload(picture(56, 40, 4)),
    }
