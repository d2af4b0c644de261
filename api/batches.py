"""/v1/batches: many jobs in one request and one transaction, their counts, cancel them all."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask.views import MethodView
from sqlalchemy import func, insert, select

from api import idempotency
from api.context import announce, db, owner, settings
from api.errors import ApiError
from api.farm import farm_workers
from api.jobs import enqueue_or_fail
from api.parsing import Blueprint
from api.present import aware, batch_summary
from api.schemas import BatchOutSchema, CancelOutSchema
from api.submit import check_jobs, insert_jobs
from shared import transitions
from shared.jobspec import BatchCreateSchema, expand_batch
from shared.models import ACTIVE, Batch, Job, Status, new_id, utcnow

blp = Blueprint("batches", __name__, url_prefix="/v1/batches",
                description="Batches: up to max_batch_jobs jobs submitted, counted and "
                            "canceled together.")

_ACTIVE = {s.value for s in ACTIVE}


def get_batch(batch_id: str) -> Batch:
    batch = db().get(Batch, batch_id)
    if batch is None or batch.owner != owner():
        raise ApiError(404, f"no batch with id {batch_id}")
    return batch


def batch_view(batch: Batch, now: datetime | None = None) -> dict[str, Any]:
    """Counts per status, mean progress and ETA, from ONE grouped query over the jobs."""
    rows = db().execute(
        select(Job.status, func.count(), func.sum(Job.progress), func.min(Job.started_at))
        .where(Job.batch_id == batch.id).group_by(Job.status)).all()
    base = f"/v1/batches/{batch.id}"
    return {
        "id": batch.id, "name": batch.name, "created_at": aware(batch.created_at),
        "webhook_url": batch.webhook_url, **batch_summary(rows, now),
        "links": {"self": base, "jobs": f"/v1/jobs?batch={batch.id}", "cancel": f"{base}/cancel"},
    }


@blp.route("")
class Batches(MethodView):
    @blp.arguments(BatchCreateSchema)
    @blp.response(202, BatchOutSchema, headers={"Location": {"schema": {"type": "string"},
                                                            "description": "the batch"}})
    @blp.alt_response(422, description="invalid jobs, an image id never uploaded, or "
                                       "contents x styles over max_batch_jobs")
    @idempotency.idempotent
    def post(self, data: dict[str, Any]) -> Any:
        """Submit many jobs: `jobs`, or every one of `contents` with every one of `styles`.

        All jobs are created in one transaction, then queued.
        """
        jobs = expand_batch(data)
        if "jobs" in data:
            paths = [f"jobs.{n}." for n in range(len(jobs))]
        else:
            n_styles = len(data["styles"])
            paths = [f"contents.{n // n_styles}|styles.{n % n_styles}|" for n in range(len(jobs))]
        session = db()
        try:
            check_jobs(session, jobs, paths, farm_workers(settings()))
        except ApiError as error:
            if error.fields and "jobs" not in data:
                error.fields = _pair_fields(error.fields)
            raise
        now = utcnow()
        batch_id = new_id()
        session.execute(insert(Batch.__table__), [{
            "id": batch_id, "name": data["name"], "owner": owner(),
            "webhook_url": data["webhook_url"], "created_at": now}])
        items = insert_jobs(session, jobs, owner=owner(), batch_id=batch_id, created_at=now)
        counts = {s.value: 0 for s in Status}
        counts[Status.QUEUED.value] = len(items)
        base = f"/v1/batches/{batch_id}"
        view = {
            "id": batch_id, "name": data["name"], "created_at": now,
            "webhook_url": data["webhook_url"], "job_count": len(items), "counts": counts,
            "finished": False, "progress": 0.0, "eta_seconds": None,
            "links": {"self": base, "jobs": f"/v1/jobs?batch={batch_id}",
                      "cancel": f"{base}/cancel"}}
        headers = {"Location": base}
        idempotency.commit(session, 202, BatchOutSchema().dump(view), headers)
        enqueue_or_fail(items)
        return view, 202, headers


def _pair_fields(fields: dict[str, list[str]]) -> dict[str, list[str]]:
    """In the contents x styles form, name the list entry at fault ("contents.3")."""
    renamed: dict[str, list[str]] = {}
    for path, messages in fields.items():
        content, style, rest = path.split("|", 2)
        if rest == "content":
            name = content
        elif rest.startswith("styles."):
            name = f"{style}.image" if rest.endswith(".image") else style
        elif rest == "init_image":
            name = "init_image"
        else:
            name = rest  # params.size: shared by the whole batch
        renamed.setdefault(name, []).extend(messages)
    return renamed


@blp.route("/<batch_id>")
class BatchItem(MethodView):
    @blp.response(200, BatchOutSchema)
    @blp.alt_response(404, description="no such batch")
    def get(self, batch_id: str) -> Any:
        """A batch's counts per status, overall progress and ETA."""
        return batch_view(get_batch(batch_id))


@blp.route("/<batch_id>/cancel")
class BatchCancel(MethodView):
    @blp.response(200, CancelOutSchema)
    @blp.alt_response(404, description="no such batch")
    @blp.alt_response(409, description="every job of the batch has finished already")
    @idempotency.idempotent
    def post(self, batch_id: str) -> Any:
        """Cancel every active job: queued ones never start, running ones stop soon."""
        session = db()
        batch = get_batch(batch_id)
        if not session.scalar(select(Job.id).where(
                Job.batch_id == batch.id, Job.status.in_(_ACTIVE)).limit(1)):
            raise ApiError(409, "every job of this batch has finished already: nothing to cancel")
        changed, canceled = transitions.cancel_batch(session, batch.id)
        view = {"changed": changed, "batch": batch_view(batch)}
        idempotency.commit(session, 200, CancelOutSchema().dump(view))
        announce(canceled, batch.id)
        return view
