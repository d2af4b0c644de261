"""What a finished job tells the outside world: webhook payloads and their delivery.

Deliveries are a separate Celery task (see `worker.tasks.deliver_webhook`) so a slow
or failing receiver costs a retry message, never GPU time. Delivery is at least
once: each payload carries a `delivery_id` a receiver can deduplicate on.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import redis
import requests
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.models import ACTIVE, Batch, Job
from shared.settings import Settings

log = logging.getLogger(__name__)
TIMEOUT_S = 10


def job_payload(job: Job, settings: Settings) -> dict[str, Any]:
    base = settings.public_url.rstrip("/")
    return {
        "event": "job.finished",
        # One id per finish (a retried job finishes again: a new id); repeats are dropped.
        "delivery_id": "job-" + hashlib.sha256(
            f"{job.id}|{job.status}|{job.finished_at}".encode()).hexdigest()[:32],
        "job_id": job.id,
        "batch_id": job.batch_id,
        "status": job.status,
        "error": job.error,
        "job_url": f"{base}/v1/jobs/{job.id}",
        "result_url": f"{base}/v1/jobs/{job.id}/result" if job.result_path else None,
    }


def finished_batch_payload(
    session: Session, batch_id: str, settings: Settings
) -> dict[str, Any] | None:
    """The batch's payload when none of its jobs is active any more, else None."""
    counts = dict(
        session.execute(
            select(Job.status, func.count()).where(Job.batch_id == batch_id).group_by(Job.status)
        ).all()
    )
    if not counts or any(counts.get(status.value) for status in ACTIVE):
        return None
    last = session.scalar(select(func.max(Job.finished_at)).where(Job.batch_id == batch_id))
    base = settings.public_url.rstrip("/")
    return {
        "event": "batch.finished",
        # Same for every worker that sees the batch finish: the key that deduplicates.
        "delivery_id": "batch-" + hashlib.sha256(f"{batch_id}|{last}".encode()).hexdigest()[:32],
        "batch_id": batch_id,
        "status": "finished",
        "counts": counts,
        "batch_url": f"{base}/v1/batches/{batch_id}",
    }


def webhooks_for(session: Session, job_id: str, settings: Settings) -> list[tuple[str, dict]]:
    """(url, payload) for the job's webhook and, if this job finished its batch, the batch's."""
    job = session.get(Job, job_id)
    if job is None:
        return []
    out: list[tuple[str, dict]] = []
    if job.webhook_url:
        payload = job_payload(job, settings)
        if first_to_announce(payload["delivery_id"], settings):
            out.append((job.webhook_url, payload))
    if job.batch_id:
        batch_url = session.scalar(select(Batch.webhook_url).where(Batch.id == job.batch_id))
        if batch_url:
            payload = finished_batch_payload(session, job.batch_id, settings)
            if payload and first_to_announce(payload["delivery_id"], settings):
                out.append((batch_url, payload))
    return out


def first_to_announce(delivery_id: str, settings: Settings) -> bool:
    """Announce each finish once: two jobs finishing a batch together both see it finished,
    and a finished job's message may be delivered again (acks_late); only one announces."""
    client = redis.Redis.from_url(settings.effective_redis_url)
    key = f"{settings.queue_prefix}announced:{delivery_id}"
    try:
        return bool(client.set(key, 1, nx=True, ex=7 * 24 * 3600))
    finally:
        client.close()


def post(url: str, payload: dict[str, Any]) -> None:
    """POST the payload; raises on a network error or a non-2xx answer (the task retries)."""
    response = requests.post(
        url, json=payload, timeout=TIMEOUT_S,
        headers={"User-Agent": "stylefarm-webhook", "X-Stylefarm-Delivery": payload["delivery_id"]},
    )
    if not 200 <= response.status_code < 300:
        raise WebhookError(f"{url} answered {response.status_code}")


class WebhookError(RuntimeError):
    pass
