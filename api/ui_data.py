"""What the dashboard's pages show, read with the same few indexed queries as the API.

Every query is scoped to the signed-in owner (api.auth's owner id), exactly as the API's
own reads are, and bounded: a page of batches, a page of a batch's jobs (keyset on
ix_jobs_batch_created, so page 100 of a 10,000-job batch costs what page 1 does).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from api.present import aware, batch_summary, eta_seconds
from shared import attempts
from shared.models import Batch, Image, Job, JobAttempt, Status, utcnow

BATCHES_PER_PAGE = 20
JOBS_PER_PAGE = 60
STATUSES = tuple(s.value for s in Status)
_RUNNING = (Status.RUNNING.value, Status.CANCEL_REQUESTED.value)


@dataclass
class Page:
    items: list[Any]
    next_cursor: str | None


def batches_page(session: Session, owner: str, cursor: str | None) -> Page:
    """The owner's batches, newest first, each with its counts (one grouped query)."""
    from api.jobs import decode_cursor, encode_cursor

    query = select(Batch).where(Batch.owner == owner)
    if cursor:
        created, last_id = decode_cursor(cursor)
        query = query.where(or_(Batch.created_at < created,
                                and_(Batch.created_at == created, Batch.id < last_id)))
    rows = session.scalars(query.order_by(Batch.created_at.desc(), Batch.id.desc())
                           .limit(BATCHES_PER_PAGE + 1)).all()
    shown = rows[:BATCHES_PER_PAGE]
    summaries = summarize(session, list(shown))
    items = [{"batch": b, "created_at": aware(b.created_at), **summaries[b.id]} for b in shown]
    nxt = None
    if len(rows) > BATCHES_PER_PAGE:
        nxt = encode_cursor(aware(shown[-1].created_at), shown[-1].id)
    return Page(items, nxt)


def summarize(session: Session, batches: list[Batch]) -> dict[str, dict[str, Any]]:
    """Counts, progress and ETA of each batch, in two grouped queries that read only what
    they must: counts per status from ix_jobs_batch_status alone, and progress from the
    running jobs (a queued job is at 0, a finished one at 1). The ETA runs from the batch's
    submission (the API's from its first start, which would mean reading every job)."""
    ids = [batch.id for batch in batches]
    counts: dict[str, dict[str, int]] = {batch_id: {} for batch_id in ids}
    running: dict[str, float] = {}
    if ids:
        for batch_id, status, count in session.execute(
                select(Job.batch_id, Job.status, func.count())
                .where(Job.batch_id.in_(ids)).group_by(Job.batch_id, Job.status)):
            counts[batch_id][status] = count
        running = dict(session.execute(
            select(Job.batch_id, func.sum(Job.progress))
            .where(Job.batch_id.in_(ids), Job.status.in_(_RUNNING)).group_by(Job.batch_id)).all())
    now = utcnow()
    out = {}
    for batch in batches:
        # batch_summary's rows: the running jobs' progress goes on one of their rows; the
        # other active rows (queued) are at 0, finished ones count whole.
        left = running.get(batch.id) or 0.0
        rows = []
        for status, n in counts[batch.id].items():
            share, left = (left, 0.0) if status in _RUNNING else (0.0, left)
            rows.append((status, n, share, batch.created_at))
        out[batch.id] = batch_summary(rows, now)
    return out


def owned_batch(session: Session, owner: str, batch_id: str) -> Batch | None:
    batch = session.get(Batch, batch_id)
    return batch if batch is not None and batch.owner == owner else None


def owned_job(session: Session, owner: str, job_id: str) -> Job | None:
    job = session.get(Job, job_id)
    return job if job is not None and job.owner == owner else None


def jobs_page(session: Session, batch_id: str, status: str | None, cursor: str | None) -> Page:
    """One page of a batch's jobs in submission order, optionally of one status."""
    from api.jobs import decode_cursor, encode_cursor

    query = select(Job).where(Job.batch_id == batch_id)
    if status:
        query = query.where(Job.status == status)
    if cursor:
        created, last_id = decode_cursor(cursor)
        query = query.where(or_(Job.created_at > created,
                                and_(Job.created_at == created, Job.id > last_id)))
    rows = session.scalars(query.order_by(Job.created_at, Job.id)
                           .limit(JOBS_PER_PAGE + 1)).all()
    shown = list(rows[:JOBS_PER_PAGE])
    nxt = None
    if len(rows) > JOBS_PER_PAGE:
        nxt = encode_cursor(aware(shown[-1].created_at), shown[-1].id)
    return Page([card(job) for job in shown], nxt)


def card(job: Job, now: datetime | None = None) -> dict[str, Any]:
    """What a job's thumbnail card shows."""
    return {"id": job.id, "status": job.status, "progress": job.progress,
            "content": job.content_image_id, "styles": [s["image"] for s in job.styles],
            "version": f"{job.status}-{round(job.progress * 100)}",
            "eta": eta_seconds(job.progress, job.started_at, job.status, now)}


def job_detail(session: Session, job: Job) -> dict[str, Any]:
    """A job's page: the card, its inputs, params, error, every attempt with scale times."""
    runs: list[JobAttempt] = attempts.of_job(session, job.id)
    ids = [job.content_image_id, *(s["image"] for s in job.styles)]
    images = {i.id: i for i in session.scalars(select(Image).where(Image.id.in_(ids)))}
    return {
        "job": job, "card": card(job),
        "created_at": aware(job.created_at), "started_at": aware(job.started_at),
        "finished_at": aware(job.finished_at),
        "content": images.get(job.content_image_id),
        "styles": [(images.get(s["image"]), s.get("weight", 1.0)) for s in job.styles],
        "attempts": [{"number": a.number, "worker": a.worker,
                      "started_at": aware(a.started_at), "finished_at": aware(a.finished_at),
                      "outcome": a.outcome or _open_outcome(job, a),
                      "scales": [(int(s), float(t)) for s, t in a.scale_seconds or []]}
                     for a in runs],
    }


def _open_outcome(job: Job, attempt: JobAttempt) -> str:
    """An attempt without an outcome is running, or its worker stopped beating."""
    if job.status in (Status.RUNNING.value, Status.CANCEL_REQUESTED.value) \
            and job.worker == attempt.worker and job.attempts == attempt.number:
        return "running"
    return "lost (worker stopped)"
