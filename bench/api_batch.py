"""How long POST /v1/batches takes for 10,000 jobs, and cancelling them, in-process.

    uv run python bench/api_batch.py [DATABASE_URL] [--no-queue]

Measures validation + image lookups + the bulk INSERT + commit (+ enqueueing, unless
--no-queue), then POST /v1/batches/{id}/cancel of each batch (two set-based UPDATEs), with
the Flask test client: without HTTP and gunicorn (bench/queue.py measures the whole path).
Queue names use a throwaway prefix, emptied afterwards.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
import uuid
from pathlib import Path
from unittest import mock

# bench/ first on sys.path would let bench/queue.py shadow the standard library's queue.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import redis  # noqa: E402
from PIL import Image as PILImage  # noqa: E402

from api import create_app  # noqa: E402
from shared.migrate import upgrade  # noqa: E402
from shared.settings import Settings  # noqa: E402


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    no_queue = "--no-queue" in sys.argv
    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    url = args[0] if args else f"sqlite:///{tmp / 'bench.db'}"
    prefix = f"bench-api-{uuid.uuid4().hex[:6]}."
    settings = Settings(data_dir=tmp, database_url=url, queue_prefix=prefix,
                        redis_url="redis://127.0.0.1:6379/0")
    upgrade(url)
    client = create_app(settings).test_client()
    ids = []
    for n in range(200):
        buffer = io.BytesIO()
        PILImage.new("RGB", (64, 48), (n % 256, n // 256, 7)).save(buffer, "PNG")
        reply = client.post("/v1/images", data={"file": (io.BytesIO(buffer.getvalue()), "x.png")},
                            content_type="multipart/form-data")
        ids.append(reply.json["id"])
    body = {"contents": ids[:100], "styles": ids[100:], "params": {"size": 512}}
    jobs_body = {"jobs": [{"content": c, "styles": [s], "params": {"size": 512}}
                          for c in ids[:100] for s in ids[100:]]}
    patch = mock.patch("api.jobs.enqueue") if no_queue else mock.MagicMock()
    with patch:
        client.post("/v1/batches", json={"contents": ids[:2], "styles": ids[2:4]})  # warm up
        for label, payload in (("contents x styles", body), ("jobs list", jobs_body)):
            start = time.perf_counter()
            reply = client.post("/v1/batches", json=payload)
            elapsed = time.perf_counter() - start
            assert reply.status_code == 202, reply.json
            print(f"{label:18s} {reply.json['job_count']} jobs: {elapsed:.3f} s "
                  f"({'without' if no_queue else 'with'} enqueue, {url.split(':')[0]})")
            batch_id = reply.json["id"]
            start = time.perf_counter()
            reply = client.post(f"/v1/batches/{batch_id}/cancel")
            elapsed = time.perf_counter() - start
            assert reply.status_code == 200, reply.json
            print(f"{'  its cancel':18s} {reply.json['changed']} jobs: {elapsed:.3f} s")
    conn = redis.Redis.from_url(settings.redis_url)
    conn.delete(*(f"{prefix}{level}" for level in ("high", "normal", "low")))


if __name__ == "__main__":
    main()
