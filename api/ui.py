"""The dashboard, served by the API: batches, a batch's jobs, a job, the workers.

Server-rendered HTML (Jinja, api/templates), useful without JavaScript: every page is
complete and every action is a plain form POST answered with a redirect. With
JavaScript, api/static/live.js keeps the page current by polling the page's fragment at
/ui/live/<view>, which is rendered once per `ui_live_cache_seconds` per process for all
viewers of that view, and answered 304 when unchanged (ETag).
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Flask, abort, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from api import ui_auth, ui_data, ui_files
from api.cache import cache
from api.context import announce, db, owner, settings, state
from api.errors import ApiError
from api.jobs import enqueue_or_fail
from shared import transitions, workers
from shared.models import ACTIVE, Job

blp = Blueprint("ui", __name__)
blp.before_request(ui_auth.require_signin)
_ACTIVE = [s.value for s in ACTIVE]
LIVE_VIEWS = ("batches", "batch", "job", "workers")


def register(app: Flask) -> None:
    ui_auth.configure(app)
    app.register_blueprint(blp)
    app.jinja_env.filters["duration"] = duration
    app.jinja_env.filters["bytes"] = byte_size


blp.add_url_rule("/signin", "signin", ui_auth.sign_in, methods=["GET", "POST"])
blp.add_url_rule("/signout", "signout", ui_auth.sign_out, methods=["POST"])


# ------------------------------------------------------------------------------ views

def _batches_view() -> dict[str, Any]:
    return {"page": ui_data.batches_page(db(), owner(), request.args.get("cursor"))}


def _batch_view(batch_id: str) -> dict[str, Any]:
    batch = ui_data.owned_batch(db(), owner(), batch_id) or abort(404)
    status = request.args.get("status") or None
    if status is not None and status not in ui_data.STATUSES:
        abort(400, f"status must be one of {', '.join(ui_data.STATUSES)}")
    cursor = request.args.get("cursor") or None
    page = ui_data.jobs_page(db(), batch.id, status, cursor)
    here = url_for("ui.batch", batch_id=batch.id, status=status, cursor=cursor)
    return {"batch": batch, "summary": ui_data.summarize(db(), [batch])[batch.id],
            "page": page, "status": status, "statuses": ui_data.STATUSES, "cursor": cursor,
            "here": here}


def _job_view(job_id: str) -> dict[str, Any]:
    job = ui_data.owned_job(db(), owner(), job_id) or abort(404)
    return ui_data.job_detail(db(), job)


def _workers_view() -> dict[str, Any]:
    try:
        live = workers.live(state().redis(), settings().queue_prefix)
        error = None
    except Exception as exc:  # Redis away: say so on the page
        live, error = [], f"Redis did not answer: {exc}"
    return {"workers": live, "error": error, "lease": settings().lease_seconds}


@blp.get("/")
def batches() -> str:
    live_url = url_for("ui.live", view="batches", cursor=request.args.get("cursor"))
    return render_template("live.html", heading="Batches", live_url=live_url,
                           fragment="_batches.html", **_batches_view())


@blp.get("/batches/<batch_id>")
def batch(batch_id: str) -> str:
    return render_template("batch.html", **_batch_view(batch_id))


@blp.get("/jobs/<job_id>")
def job(job_id: str) -> str:
    return render_template("job.html", **_job_view(job_id))


@blp.get("/workers")
def workers_page() -> str:
    return render_template("live.html", heading="Workers", live_url=url_for("ui.live",
                                                                            view="workers"),
                           fragment="_workers.html", **_workers_view())


# ------------------------------------------------------------------------------- live

@blp.get("/ui/live/<view>")
def live(view: str) -> Response:
    """The live part of a page as an HTML fragment; 304 when the viewer has it already."""
    if view not in LIVE_VIEWS:
        abort(404)
    args = tuple(sorted((k, v) for k, v in request.args.items() if k in ("cursor", "status",
                                                                        "id")))
    key = (owner(), view, args)
    html, etag = cache("ui-live", settings().ui_live_cache_seconds).get(
        key, lambda: _render_live(view, dict(args)))
    if etag in request.if_none_match:
        reply = Response(status=304)
    else:
        reply = Response(html, mimetype="text/html")
    reply.set_etag(etag)
    reply.headers["Cache-Control"] = "no-cache"
    return reply


def _render_live(view: str, args: dict[str, str]) -> tuple[str, str]:
    if view == "batches":
        html = render_template("_batches.html", **_batches_view())
    elif view == "batch":
        html = render_template("_batch.html", **_batch_view(args.get("id", "")))
    elif view == "job":
        html = render_template("_job.html", **_job_view(args.get("id", "")))
    else:
        html = render_template("_workers.html", **_workers_view())
    return html, hashlib.sha1(html.encode()).hexdigest()[:20]


# ---------------------------------------------------------------------------- images

@blp.get("/ui/jobs/<job_id>/thumb")
def job_thumb(job_id: str) -> Response:
    return ui_files.job_thumb(ui_data.owned_job(db(), owner(), job_id) or abort(404))


@blp.get("/ui/jobs/<job_id>/preview")
def job_preview(job_id: str) -> Response:
    return ui_files.job_preview(ui_data.owned_job(db(), owner(), job_id) or abort(404))


@blp.get("/ui/jobs/<job_id>/result")
def job_result(job_id: str) -> Response:
    return ui_files.job_result(ui_data.owned_job(db(), owner(), job_id) or abort(404))


@blp.get("/ui/images/<image_id>/thumb")
def input_thumb(image_id: str) -> Response:
    if len(image_id) != 64 or any(c not in "0123456789abcdef" for c in image_id):
        abort(404)
    return ui_files.input_thumb(image_id)


# ---------------------------------------------------------------------------- actions

def _back(default: str, note: str | None = None) -> Response:
    target = ui_auth.safe_next(default)
    if note:
        target += ("&" if "?" in target else "?") + urlencode({"note": note})
    return redirect(target, code=303)


@blp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    session = db()
    found = ui_data.owned_job(session, owner(), job_id) or abort(404)
    if transitions.is_finished(found.status):
        return _back(url_for("ui.job", job_id=job_id), f"the job is {found.status} already")
    transitions.request_cancel(session, [found.id])
    session.commit()
    announce([found.id])
    return _back(url_for("ui.job", job_id=job_id))


@blp.post("/jobs/<job_id>/retry")
def retry_job(job_id: str) -> Response:
    found = ui_data.owned_job(db(), owner(), job_id) or abort(404)
    return _retry([found.id], url_for("ui.job", job_id=job_id))


@blp.post("/batches/<batch_id>/cancel")
def cancel_batch(batch_id: str) -> Response:
    session = db()
    found = ui_data.owned_batch(session, owner(), batch_id) or abort(404)
    active = session.scalar(_ids(found.id, _ACTIVE).limit(1))
    _, canceled = transitions.cancel_batch(session, found.id)
    session.commit()
    announce(canceled, found.id)
    return _back(url_for("ui.batch", batch_id=batch_id),
                 None if active else "nothing to cancel: every job has finished")


@blp.post("/batches/<batch_id>/retry")
def retry_batch(batch_id: str) -> Response:
    found = ui_data.owned_batch(db(), owner(), batch_id) or abort(404)
    ids = list(db().scalars(_ids(found.id, ["failed", "canceled"])))
    return _retry(ids, url_for("ui.batch", batch_id=batch_id))


def _ids(batch_id: str, statuses: list[str]) -> Any:
    return select(Job.id).where(Job.batch_id == batch_id, Job.status.in_(statuses))


def _retry(ids: list[str], back: str) -> Response:
    session = db()
    items: list[tuple[str, int]] = []
    for start in range(0, len(ids), 5000):
        items += transitions.retry_many(session, ids[start:start + 5000])
    session.commit()
    if not items:
        return _back(back, "nothing to retry: only failed or canceled jobs can be")
    try:
        enqueue_or_fail(items)
    except ApiError as error:
        return _back(back, error.message)
    return _back(back)


# ---------------------------------------------------------------------------- filters

def duration(seconds: float | None) -> str:
    """Seconds as '1 h 02 min', '3 min 05 s', '4.2 s'; an em dash when unknown."""
    if seconds is None:
        return "—"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def byte_size(value: object) -> str:
    """Bytes in binary units; an em dash for anything that is not a number (a record from
    an older or newer worker may lack the field)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
