"""Jobs brought to an end without a worker, for tests of what the API shows of them.

The dashboard and the batch downloads read what workers write (a result file, a
finished row, attempt history); these helpers write exactly that through the same
functions a worker calls (shared.transitions, shared.attempts, Storage), so the HTTP
tests need no render. tests/queue/test_dashboard_farm.py does the same with a real worker.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image as PILImage
from sqlalchemy.orm import Session

from shared import attempts, transitions
from shared.db import engine_for
from shared.settings import Settings
from shared.storage import Storage, atomic_write


def result_png(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    image = PILImage.new("RGB", size, ((seed * 53) % 256, (seed * 97) % 256, 200))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def finish(settings: Settings, job_id: str, *, outcome: str = "succeeded", seed: int = 0,
           scales: list[list[float]] | None = None, worker: str = "testhost:1") -> bytes | None:
    """Claim `job_id` as `worker`, record one attempt with `scales`, and end it."""
    engine = engine_for(settings.effective_database_url)
    storage = Storage(settings.data_dir)
    data = None
    with Session(engine) as session, session.begin():
        claim = transitions.claim(session, job_id, worker, lease_seconds=30, max_attempts=3)
        attempt = attempts.start(session, job_id, claim.attempt, worker)
        if outcome == "succeeded":
            data = result_png(seed)
            path = atomic_write(storage.result_path(job_id), data)
            transitions.succeed(session, job_id, worker, storage.relative(path))
        elif outcome == "failed":
            transitions.fail(session, job_id, worker, "out of memory at 4096 px: try smaller")
        elif outcome == "running":
            transitions.record_progress(session, job_id, worker, progress=0.4, scale=1,
                                        scale_count=3, iteration=5)
        if outcome != "running":
            attempts.finish(session, attempt, outcome, scales or [[0, 1.5], [1, 2.25]])
        else:
            attempts.record_scales(session, attempt, scales or [[0, 1.5]])
    return data


def batch_jobs(client: Any, batch_id: str) -> list[dict[str, Any]]:
    items, url = [], f"/v1/jobs?batch={batch_id}&limit=1000"
    while url:
        page = client.get(url).json
        items += page["items"]
        url = page["next"]
    return items
