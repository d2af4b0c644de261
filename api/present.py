"""Records as replies: a job's JSON view, its links and its estimated time left."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.models import ACTIVE, Job, Status, utcnow

_ACTIVE = {s.value for s in ACTIVE}
_RETRYABLE = {Status.FAILED.value, Status.CANCELED.value}


def aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time the API stores is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


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
