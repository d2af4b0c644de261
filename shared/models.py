"""Database records: images, batches, jobs, and the replies kept for idempotent requests.

The database, not the broker, is the source of truth for a job's status: the
broker only carries "job X may be run now". Status changes go through
`shared.transitions`, whose guarded UPDATEs keep finished jobs finished and
one job on one worker.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time stylefarm stores is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCEL_REQUESTED = "cancel-requested"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELED)
ACTIVE = (Status.QUEUED, Status.RUNNING, Status.CANCEL_REQUESTED)


class Base(DeclarativeBase):
    pass


class Image(Base):
    """An uploaded image, addressed by the sha256 of its bytes: one row however often uploaded."""

    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))
    byte_size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Batch(Base):
    """A group of jobs submitted together; its counts and progress are derived from its jobs."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), default="")
    owner: Mapped[str] = mapped_column(String(64), default="", index=True)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    jobs: Mapped[list[Job]] = relationship(back_populates="batch", lazy="raise_on_sql")


class Job(Base):
    """One render: a content image, weighted styles and render parameters."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_batch_status", "batch_id", "status"),
        Index("ix_jobs_owner_created", "owner", "created_at", "id"),
        Index("ix_jobs_status_created", "status", "created_at", "id"),
        # GET /v1/jobs?batch=...: keyset pages of one batch.
        Index("ix_jobs_batch_created", "batch_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), nullable=True)
    owner: Mapped[str] = mapped_column(String(64), default="")
    content_image_id: Mapped[str] = mapped_column(ForeignKey("images.id"))
    # [{"image": sha256, "weight": float}, ...]
    styles: Mapped[list[Any]] = mapped_column(JSON)
    init_image_id: Mapped[str | None] = mapped_column(ForeignKey("images.id"), nullable=True)
    # shared.spec.RenderParams.to_dict()
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)

    status: Mapped[str] = mapped_column(String(20), default=Status.QUEUED.value, index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    scale: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 0-based current scale
    scale_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    iteration: Mapped[int | None] = mapped_column(Integer, nullable=True)  # within the scale
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Written by the running worker (progress and a heartbeat); a stale one means the worker died.
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    preview_path: Mapped[str | None] = mapped_column(Text, nullable=True)

    batch: Mapped[Batch | None] = relationship(back_populates="jobs", lazy="raise_on_sql")


class JobAttempt(Base):
    """One run of a job on one worker: who ran it, when, how it ended, seconds per scale.

    The job's own row keeps only the latest attempt (its worker, its start); an operator
    asking why a job took three tries, or which scale is slow, needs every run. A run whose
    worker died keeps no outcome: the reconciler's requeue is what ended it.
    """

    __tablename__ = "job_attempts"
    __table_args__ = (Index("ix_job_attempts_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    number: Mapped[int] = mapped_column(Integer)  # the job's attempt count at the claim
    worker: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(20), nullable=True)
    # [[scale index, seconds], ...] for the scales this run completed (a resumed run starts
    # after its checkpoint's scale).
    scale_seconds: Mapped[list[Any]] = mapped_column(JSON, default=list)


class JobCountDelta(Base):
    """Changes in the number of jobs per (status, priority), appended by database triggers
    (migration 0002) on every INSERT, DELETE, and UPDATE that moves a job's status or
    priority, whoever runs it. /metrics sums this small table instead of counting every
    job, and folds it up now and then (shared.jobcounts): a scrape costs the same at
    100,000 jobs as at 100. Append-only, so concurrent transitions never wait on a
    shared counter row."""

    __tablename__ = "job_count_deltas"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(String(20))
    priority: Mapped[int] = mapped_column(Integer)
    delta: Mapped[int] = mapped_column(Integer)


class IdempotentReply(Base):
    """The first reply to a POST that carried an Idempotency-Key, replayed on repeats."""

    __tablename__ = "idempotent_replies"
    __table_args__ = (UniqueConstraint("owner", "key", name="uq_idempotent_owner_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(64), default="")
    key: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(Text)
    # A hash of the request body: the same key with a different request is a 409/422.
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
