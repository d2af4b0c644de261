"""Every change of a job's status, each one a guarded UPDATE.

Each function states in its WHERE clause which statuses it may leave, so a
race between the API and a worker, or between two workers that received the
same message, is settled by the database: one UPDATE matches, the other does
not. A finished job never returns to running; a running job belongs to the
worker named in its row until its heartbeat goes stale.

The functions flush but do not commit: the caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from shared.models import FINISHED, Job, Status, utcnow

RUNNING_STATES = (Status.RUNNING.value, Status.CANCEL_REQUESTED.value)


class Claim(StrEnum):
    """What a worker should do with a delivered job."""

    RUN = "run"  # this worker now owns the job
    SKIP = "skip"  # finished or canceled already: ack and forget
    BUSY = "busy"  # a live worker runs it: this delivery is a duplicate, try again later
    MISSING = "missing"  # no such job (deleted, or a message from another database)


@dataclass(frozen=True)
class ClaimResult:
    outcome: Claim
    attempt: int = 0


def _stale_before(lease_seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=lease_seconds)


def claim(
    session: Session, job_id: str, worker: str, *, lease_seconds: float, max_attempts: int
) -> ClaimResult:
    """Take a job for `worker`: a queued one, or a running one whose worker stopped beating.

    A job whose earlier attempts reached `max_attempts` is failed instead, so a job that
    kills its worker (out of memory, say) cannot take the farm down one worker at a time.
    """
    now = utcnow()
    takeable = or_(
        Job.status == Status.QUEUED.value,
        (Job.status.in_(RUNNING_STATES)) & (Job.heartbeat_at < _stale_before(lease_seconds)),
    )
    # A job canceled while its worker was dead is finished here, not run.
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == Status.CANCEL_REQUESTED.value,
               Job.heartbeat_at < _stale_before(lease_seconds))
        .values(status=Status.CANCELED.value, finished_at=now)
    )
    exhausted = session.execute(
        update(Job)
        .where(Job.id == job_id, takeable, Job.attempts >= max_attempts)
        .values(status=Status.FAILED.value, finished_at=now, error=exhausted_error(max_attempts))
    ).rowcount
    if exhausted:
        return ClaimResult(Claim.SKIP)
    taken = session.execute(
        update(Job)
        .where(Job.id == job_id, takeable)
        .values(
            status=Status.RUNNING.value,
            worker=worker,
            attempts=Job.attempts + 1,
            started_at=now,
            heartbeat_at=now,
            error=None,
        )
    ).rowcount
    session.flush()
    status = session.scalar(select(Job.status).where(Job.id == job_id))
    if status is None:
        return ClaimResult(Claim.MISSING)
    if taken:
        attempt = session.scalar(select(Job.attempts).where(Job.id == job_id)) or 1
        return ClaimResult(Claim.RUN, attempt)
    if status in RUNNING_STATES:
        return ClaimResult(Claim.BUSY)
    return ClaimResult(Claim.SKIP)


def exhausted_error(max_attempts: int) -> str:
    return (f"the job stopped its worker {max_attempts} times (out of memory, or the worker "
            "was killed); try a smaller size, or retry it")


@dataclass
class Expired:
    """Jobs whose worker stopped beating, by what became of them."""

    requeued: list[tuple[str, int]]  # (job id, priority): to be sent again
    failed: list[str]  # at the attempt cap
    canceled: list[str]  # a cancel request that its worker never saw through


def expire_leases(session: Session, *, lease_seconds: float, max_attempts: int) -> Expired:
    """Act on every expired lease at once (the reconciler's first step).

    Running jobs go back to `queued` (the claim takes them from there, as from a fresh
    message), or to `failed` at the attempt cap, as `claim` would; stale cancel requests
    end as canceled. Each UPDATE is guarded by the same staleness test as `claim`, so a
    worker that beats meanwhile keeps its job, and RETURNING says exactly which rows moved.
    """
    now = utcnow()
    stale = Job.heartbeat_at < _stale_before(lease_seconds)
    plain = {"synchronize_session": False}
    canceled = session.execute(
        update(Job).where(Job.status == Status.CANCEL_REQUESTED.value, stale)
        .values(status=Status.CANCELED.value, finished_at=now)
        .returning(Job.id), execution_options=plain).scalars().all()
    failed = session.execute(
        update(Job).where(Job.status == Status.RUNNING.value, stale,
                          Job.attempts >= max_attempts)
        .values(status=Status.FAILED.value, finished_at=now, error=exhausted_error(max_attempts))
        .returning(Job.id), execution_options=plain).scalars().all()
    requeued = session.execute(
        update(Job).where(Job.status == Status.RUNNING.value, stale)
        .values(status=Status.QUEUED.value, worker=None, heartbeat_at=None)
        .returning(Job.id, Job.priority), execution_options=plain).all()
    session.flush()
    return Expired([(job_id, priority) for job_id, priority in requeued], list(failed),
                   list(canceled))


def record_progress(
    session: Session,
    job_id: str,
    worker: str,
    *,
    progress: float,
    scale: int | None = None,
    scale_count: int | None = None,
    iteration: int | None = None,
    loss: float | None = None,
    preview_path: str | None = None,
) -> Status | None:
    """Write progress (it doubles as a heartbeat) and return the job's status.

    The returned status is how a running job learns that cancellation was asked for.
    None means this worker no longer owns the job (another worker took it over).
    """
    values: dict[str, object] = {"progress": max(0.0, min(1.0, progress)), "heartbeat_at": utcnow()}
    for name, value in (("scale", scale), ("scale_count", scale_count), ("iteration", iteration),
                        ("loss", loss), ("preview_path", preview_path)):
        if value is not None:
            values[name] = value
    return _touch(session, job_id, worker, values)


def heartbeat(session: Session, job_id: str, worker: str) -> Status | None:
    """Say "still alive" without progress (between scales, while loading, ...)."""
    return _touch(session, job_id, worker, {"heartbeat_at": utcnow()})


def _touch(session: Session, job_id: str, worker: str, values: dict[str, object]) -> Status | None:
    owned = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status.in_(RUNNING_STATES))
        .values(**values)
    ).rowcount
    if not owned:
        return None
    return Status(session.scalar(select(Job.status).where(Job.id == job_id)))


def succeed(session: Session, job_id: str, worker: str, result_path: str) -> bool:
    """Record the result; a cancel that arrived after the last iteration loses to it."""
    return _finish(session, job_id, worker, Status.SUCCEEDED, result_path=result_path, progress=1.0)


def fail(session: Session, job_id: str, worker: str, error: str) -> bool:
    return _finish(session, job_id, worker, Status.FAILED, error=error)


def finish_canceled(session: Session, job_id: str, worker: str) -> bool:
    """The worker stopped because cancellation was asked for."""
    return _finish(session, job_id, worker, Status.CANCELED)


def _finish(session: Session, job_id: str, worker: str, status: Status, **values: object) -> bool:
    done = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status.in_(RUNNING_STATES))
        .values(status=status.value, finished_at=utcnow(), **values)
    ).rowcount
    session.flush()
    return bool(done)


def request_cancel(session: Session, job_ids: list[str]) -> int:
    """Queued jobs are canceled at once (they never start); running ones are asked to stop.

    Returns how many jobs changed. Finished jobs are left as they are.
    """
    now = utcnow()
    canceled = session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.status == Status.QUEUED.value)
        .values(status=Status.CANCELED.value, finished_at=now)
    ).rowcount
    asked = session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.status == Status.RUNNING.value)
        .values(status=Status.CANCEL_REQUESTED.value)
    ).rowcount
    session.flush()
    return canceled + asked


def cancel_batch(session: Session, batch_id: str) -> tuple[int, list[str]]:
    """`request_cancel` for every active job of a batch, as two set-based UPDATEs: a
    10,000-job batch must cancel in one short transaction, not in id lists shipped back
    and forth. Returns how many jobs changed, and the ids of those canceled at once that
    have a webhook of their own (the caller announces them with the batch's; running jobs
    announce theirs when they stop)."""
    canceled = session.execute(
        update(Job)
        .where(Job.batch_id == batch_id, Job.status == Status.QUEUED.value)
        .values(status=Status.CANCELED.value, finished_at=utcnow())
        .returning(Job.id, Job.webhook_url), execution_options={"synchronize_session": False}
    ).all()
    asked = session.execute(
        update(Job)
        .where(Job.batch_id == batch_id, Job.status == Status.RUNNING.value)
        .values(status=Status.CANCEL_REQUESTED.value),
        execution_options={"synchronize_session": False}
    ).rowcount
    session.flush()
    return len(canceled) + asked, [job_id for job_id, url in canceled if url]


def retry(session: Session, job_id: str) -> bool:
    """Put a failed or canceled job back in the queue, with a fresh attempt budget.

    The caller enqueues the job's message after committing.
    """
    return bool(retry_many(session, [job_id]))


def retry_many(session: Session, job_ids: list[str]) -> list[tuple[str, int]]:
    """`retry` for many jobs in one UPDATE; returns (id, priority) of those queued again."""
    done = session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.status.in_((Status.FAILED.value, Status.CANCELED.value)))
        .values(
            status=Status.QUEUED.value,
            progress=0.0,
            scale=None,
            iteration=None,
            loss=None,
            error=None,
            result_path=None,
            preview_path=None,
            started_at=None,
            finished_at=None,
            heartbeat_at=None,
            worker=None,
            attempts=0,
        )
        .returning(Job.id, Job.priority), execution_options={"synchronize_session": False}
    ).all()
    session.flush()
    return [(job_id, priority) for job_id, priority in done]


def is_finished(status: str) -> bool:
    return status in {s.value for s in FINISHED}
