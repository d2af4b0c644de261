"""An API app per test, on a migrated real database and the real Redis.

Queue names get a prefix unique to this test session, so messages the tests enqueue
never reach a worker that another helper (or a developer) runs on the same Redis.
"""

from __future__ import annotations

import io
import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_client
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image as PILImage

from api import create_app
from shared.migrate import upgrade
from shared.settings import Settings

QUEUE_PREFIX = f"test-api-{uuid.uuid4().hex[:8]}."


def image_bytes(width: int = 32, height: int = 24, fmt: str = "PNG", seed: int = 0,
                noise: bool = False) -> bytes:
    """A tiny image; `noise` makes it incompressible (for truncation and size tests)."""
    rng = random.Random(seed)
    if noise:
        image = PILImage.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    else:
        image = PILImage.new("RGB", (width, height), (rng.randrange(256), 80, 160))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", database_url=database_url, redis_url=redis_url,
        queue_prefix=QUEUE_PREFIX, max_input_pixels=100_000, max_upload_bytes=200_000,
        max_output_pixels=4_000_000, max_batch_jobs=10_000,
    )


@pytest.fixture
def make_app(settings: Settings) -> Callable[..., Flask]:
    upgrade(settings.effective_database_url)

    def make(**changes: Any) -> Flask:
        return create_app(settings.with_(**changes))

    return make


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def queue(redis_url: str) -> Iterator[Callable[[], int]]:
    """How many render messages wait in this session's queues (emptied around each test)."""
    conn = redis_client.Redis.from_url(redis_url)
    names = [f"{QUEUE_PREFIX}{level}" for level in ("high", "normal", "low")]
    conn.delete(*names)
    yield lambda: sum(conn.llen(name) for name in names)
    conn.delete(*names)
    conn.close()


def upload(client: FlaskClient, data: bytes, name: str = "image.png",
           headers: dict[str, str] | None = None) -> Any:
    return client.post("/v1/images", data={"file": (io.BytesIO(data), name)},
                       content_type="multipart/form-data", headers=headers or {})


@pytest.fixture
def images(client: FlaskClient) -> list[str]:
    """Ids of four uploaded images (content and style material), 32x24 each."""
    ids = []
    for seed in range(4):
        reply = upload(client, image_bytes(seed=seed + 1, width=32 + seed))
        assert reply.status_code == 201, reply.json
        ids.append(reply.json["id"])
    return ids
