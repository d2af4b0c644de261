"""Per-attempt history: one row per run of a job (worker, start, end, outcome, scale times).

Written by the worker that claimed the job, in the transactions it opens anyway (the
claim, a scale's end, the outcome), so the history costs one small UPDATE per scale.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from shared.models import JobAttempt, utcnow


def start(session: Session, job_id: str, number: int, worker: str) -> int:
    """Record that `worker` started attempt `number`; returns the attempt's id."""
    return session.execute(
        insert(JobAttempt).values(job_id=job_id, number=number, worker=worker,
                                  started_at=utcnow(), scale_seconds=[])
        .returning(JobAttempt.id)).scalar_one()


def record_scales(session: Session, attempt_id: int, scale_seconds: list[list[float]]) -> None:
    """The seconds of each scale this attempt has completed so far."""
    session.execute(update(JobAttempt).where(JobAttempt.id == attempt_id)
                    .values(scale_seconds=scale_seconds))


def finish(session: Session, attempt_id: int, outcome: str,
           scale_seconds: list[list[float]] | None = None) -> None:
    values: dict[str, Any] = {"finished_at": utcnow(), "outcome": outcome}
    if scale_seconds is not None:
        values["scale_seconds"] = scale_seconds
    session.execute(update(JobAttempt).where(JobAttempt.id == attempt_id).values(**values))


def of_job(session: Session, job_id: str, limit: int = 50) -> list[JobAttempt]:
    """The job's attempts, oldest first (bounded: a job retried forever keeps its latest)."""
    rows = session.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id)
                           .order_by(JobAttempt.id.desc()).limit(limit)).all()
    return list(reversed(rows))
