"""Records as replies: a job's JSON view, its links and its estimated time left."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from shared.models import ACTIVE, Job, Status, aware, utcnow

_ACTIVE = {s.value for s in ACTIVE}
_RETRYABLE = {Status.FAILED.value, Status.CANCELED.value}


def eta_seconds(progress: float, started_at: datetime | None, status: str,
                now: datetime | None = None) -> float | None:
    """Seconds left, assuming the rest goes as fast as what is done (None: no basis yet)."""
    if status not in _ACTIVE:
        return 0.0
    started = aware(started_at)
    if started is None or progress <= 0:
        return None
    elapsed = ((now or utcnow()) - started).total_seconds()
    if elapsed <= 0:
        return None
    return round(max(0.0, elapsed * (1 - min(progress, 1.0)) / progress), 1)


def batch_summary(rows: Iterable[tuple[str, int, float | None, datetime | None]],
                  now: datetime | None = None) -> dict[str, Any]:
    """Counts per status, mean progress and ETA of a batch, from its rows of
    (status, count, sum of progress, first start) grouped by status."""
    counts = {s.value: 0 for s in Status}
    done = 0.0
    first_start: datetime | None = None
    for status, count, progress_sum, started in rows:
        counts[status] = count
        done += (progress_sum or 0.0) if status in _ACTIVE else count
        started = aware(started)
        if started is not None and (first_start is None or started < first_start):
            first_start = started
    total = sum(counts.values())
    active = sum(counts[s] for s in _ACTIVE)
    progress = done / total if total else 1.0
    eta = None
    if not active:
        eta = 0.0
    elif first_start is not None and progress > 0:
        elapsed = ((now or utcnow()) - first_start).total_seconds()
        eta = round(max(0.0, elapsed * (1 - progress) / progress), 1)
    return {"job_count": total, "counts": counts, "finished": active == 0,
            "progress": round(progress, 6), "eta_seconds": eta}


def job_links(job: Job) -> dict[str, str | None]:
    base = f"/v1/jobs/{job.id}"
    return {
        "self": base,
        "result": f"{base}/result" if job.status == Status.SUCCEEDED.value and job.result_path
        else None,
        "preview": f"{base}/preview" if job.preview_path else None,
        "batch": f"/v1/batches/{job.batch_id}" if job.batch_id else None,
        "cancel": f"{base}/cancel" if job.status in _ACTIVE else None,
        "retry": f"{base}/retry" if job.status in _RETRYABLE else None,
    }


def job_view(job: Job, now: datetime | None = None) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status,
        "progress": job.progress,
        "scale": job.scale,
        "scale_count": job.scale_count,
        "iteration": job.iteration,
        "loss": job.loss,
        "eta_seconds": eta_seconds(job.progress, job.started_at, job.status, now),
        "created_at": aware(job.created_at),
        "started_at": aware(job.started_at),
        "finished_at": aware(job.finished_at),
        "attempts": job.attempts,
        "worker": job.worker,
        "error": job.error,
        "batch_id": job.batch_id,
        "content": job.content_image_id,
        "styles": job.styles,
        "init_image": job.init_image_id,
        "params": job.params,
        "priority": job.priority,
        "webhook_url": job.webhook_url,
        "links": job_links(job),
    }
