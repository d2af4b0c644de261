"""/v1/jobs: submit one job, read it, list jobs page by page, cancel, retry, fetch images."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from flask import send_file
from flask.views import MethodView
from marshmallow import RAISE
from sqlalchemy import and_, or_, select, update

from api import idempotency
from api.context import announce, db, enqueue, owner, settings, storage
from api.errors import ApiError
from api.farm import farm_workers
from api.parsing import Blueprint
from api.present import aware, job_view
from api.schemas import JobListArgsSchema, JobOutSchema, JobPageSchema
from api.submit import check_jobs, insert_jobs
from shared import transitions
from shared.jobspec import JobCreateSchema
from shared.models import Job, Status, utcnow

blp = Blueprint("jobs", __name__, url_prefix="/v1/jobs",
                description="Render jobs: submit, follow, cancel, retry, collect the result.")


def get_job(job_id: str) -> Job:
    """The caller's job, or 404 (another owner's job is as absent as a missing one)."""
    job = db().get(Job, job_id)
    if job is None or job.owner != owner():
        raise ApiError(404, f"no job with id {job_id}")
    return job


def enqueue_or_fail(items: list[tuple[str, int]]) -> None:
    """Queue committed jobs; if the broker is down, fail them (retryable) and answer 503.

    Leaving them queued without a message would leave them waiting forever.
    """
    try:
        enqueue(items)
    except Exception as exc:
        session = db()
        ids = [job_id for job_id, _ in items]
        for start in range(0, len(ids), 5000):
            session.execute(
                update(Job).where(Job.id.in_(ids[start:start + 5000]),
                                  Job.status == Status.QUEUED.value)
                .values(status=Status.FAILED.value, finished_at=utcnow(),
                        error=f"could not be queued (broker unreachable: {exc}); retry it"))
        session.commit()
        raise ApiError(503, "the queue is unreachable: the jobs were recorded as failed; "
                            "retry them when it is back", headers={"Retry-After": "10"}) from exc


@blp.route("")
class Jobs(MethodView):
    @blp.arguments(JobCreateSchema)
    @blp.response(202, JobOutSchema, headers={"Location": {"schema": {"type": "string"},
                                                          "description": "the job"}})
    @blp.alt_response(422, description="invalid parameters, or an image id never uploaded")
    @idempotency.idempotent
    def post(self, job: dict[str, Any]) -> Any:
        """Submit one job. It is queued; follow it at the Location."""
        session = db()
        check_jobs(session, [job], workers=farm_workers(settings()))
        [(job_id, priority)] = insert_jobs(session, [job], owner=owner(), batch_id=None,
                                           created_at=utcnow())
        session.flush()
        view = job_view(session.get(Job, job_id))
        headers = {"Location": f"/v1/jobs/{job_id}"}
        idempotency.commit(session, 202, JobOutSchema().dump(view), headers)
        enqueue_or_fail([(job_id, priority)])
        return view, 202, headers

    @blp.arguments(JobListArgsSchema, location="query", unknown=RAISE)
    @blp.response(200, JobPageSchema)
    @blp.alt_response(422, description="invalid status, limit or cursor")
    def get(self, args: dict[str, Any]) -> Any:
        """List jobs, oldest first, a page at a time (follow `next`)."""
        query = select(Job).where(Job.owner == owner())
        if "batch" in args:
            query = query.where(Job.batch_id == args["batch"])
        if "status" in args:
            query = query.where(Job.status == args["status"])
        if "cursor" in args:
            created_at, last_id = decode_cursor(args["cursor"])
            query = query.where(or_(Job.created_at > created_at,
                                    and_(Job.created_at == created_at, Job.id > last_id)))
        limit = args["limit"]
        rows = db().scalars(query.order_by(Job.created_at, Job.id).limit(limit + 1)).all()
        now = utcnow()
        items = [job_view(job, now) for job in rows[:limit]]
        next_url = None
        if len(rows) > limit:
            last = rows[limit - 1]
            query_args = {k: v for k, v in args.items() if k != "cursor"}
            query_args["cursor"] = encode_cursor(aware(last.created_at), last.id)
            next_url = f"/v1/jobs?{urlencode(query_args)}"
        return {"items": items, "next": next_url}


def encode_cursor(created_at: datetime | None, job_id: str) -> str:
    raw = json.dumps([created_at.isoformat() if created_at else "", job_id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Opaque to clients; a cursor that is not one of ours is a 422 naming `cursor`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        moment = aware(datetime.fromisoformat(created))
        if not isinstance(job_id, str) or "\x00" in job_id or moment is None:
            raise ValueError(job_id)
        return moment, job_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ApiError(422, "invalid cursor: use the `next` link of a previous page",
                       {"cursor": ["not a cursor from this API"]}) from None


@blp.route("/<job_id>")
class JobItem(MethodView):
    @blp.response(200, JobOutSchema)
    @blp.alt_response(404, description="no such job")
    def get(self, job_id: str) -> Any:
        """A job's status, progress, ETA and links."""
        return job_view(get_job(job_id))


@blp.route("/<job_id>/cancel")
class JobCancel(MethodView):
    @blp.response(200, JobOutSchema, description="canceled (queued) or asked to stop (running)")
    @blp.alt_response(404, description="no such job")
    @blp.alt_response(409, description="the job has finished already")
    @idempotency.idempotent
    def post(self, job_id: str) -> Any:
        """Cancel a job: a queued one never starts; a running one stops within an iteration."""
        session = db()
        job = get_job(job_id)
        if transitions.is_finished(job.status):
            raise ApiError(409, f"the job has {_past(job.status)} already: nothing to cancel")
        transitions.request_cancel(session, [job.id])
        session.refresh(job)
        if job.status in (Status.SUCCEEDED.value, Status.FAILED.value):
            # A worker finished it between our read and our UPDATE.
            raise ApiError(409, f"the job has {_past(job.status)} already: nothing to cancel")
        view = job_view(job)
        idempotency.commit(session, 200, JobOutSchema().dump(view))
        announce([job.id])
        return view


def _past(status: str) -> str:
    return {"succeeded": "succeeded", "failed": "failed", "canceled": "been canceled"}.get(
        status, status)


@blp.route("/<job_id>/retry")
class JobRetry(MethodView):
    @blp.response(202, JobOutSchema, description="queued again")
    @blp.alt_response(404, description="no such job")
    @blp.alt_response(409, description="only failed or canceled jobs can be retried")
    @idempotency.idempotent
    def post(self, job_id: str) -> Any:
        """Queue a failed or canceled job again, with a fresh attempt budget."""
        session = db()
        job = get_job(job_id)
        if not transitions.retry(session, job.id):
            session.refresh(job)
            raise ApiError(409, f"only failed or canceled jobs can be retried; this one is "
                                f"{job.status}")
        session.refresh(job)
        view = job_view(job)
        headers = {"Location": f"/v1/jobs/{job.id}"}
        idempotency.commit(session, 202, JobOutSchema().dump(view), headers)
        enqueue_or_fail([(job.id, job.priority)])
        return view, 202, headers


@blp.route("/<job_id>/result")
class JobResult(MethodView):
    @blp.response(200, content_type="image/*", description="the finished image (ETag, 304)")
    @blp.alt_response(404, description="no such job")
    @blp.alt_response(409, description="no result (yet): the job has not succeeded")
    def get(self, job_id: str) -> Any:
        """The rendered image, once the job succeeded (409 until then: the job exists)."""
        job = get_job(job_id)
        if job.status != Status.SUCCEEDED.value or not job.result_path:
            raise ApiError(409, f"no result yet: the job is {job.status}")
        return _send(job.result_path, job_id, max_age=86_400)


@blp.route("/<job_id>/preview")
class JobPreview(MethodView):
    @blp.response(200, content_type="image/jpeg", description="the latest intermediate image")
    @blp.alt_response(404, description="no such job")
    @blp.alt_response(409, description="no preview yet: the job has not run")
    def get(self, job_id: str) -> Any:
        """A small JPEG of the job's latest iterate, refreshed while it runs (409 before)."""
        job = get_job(job_id)
        if not job.preview_path:
            raise ApiError(409, "no preview yet: the worker writes one once the job runs")
        return _send(job.preview_path, job_id, max_age=0)


def _send(stored: str, job_id: str, max_age: int) -> Any:
    path = storage().resolve(stored)
    if not path.is_file():
        raise ApiError(404, f"the image of job {job_id} is not on the storage volume")
    # Flask's ETag is built from mtime, size and name; conditional=True answers 304 to it.
    response = send_file(path, conditional=True, etag=True, max_age=max_age)
    if max_age == 0:
        response.headers["Cache-Control"] = "no-cache"
    return response
