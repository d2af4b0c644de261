"""From validated JobCreate dicts to committed job rows: the checks that need the database.

Built for big batches: each distinct image id is looked up once (in chunks), each
distinct (content size, params) pair is checked against the output limit once, each
distinct RenderParams is turned into a dict once, and the rows go in with one bulk
INSERT (executemany; COPY on PostgreSQL), never one ORM object at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import ApiError
from shared.memory import WorkerMemory, farm_problem
from shared.models import Image, Job, Status, new_id
from shared.spec import RenderParams, output_size, plan_scales
from shared.webhooks import target_problem

_CHUNK = 1000
_MAX_REPORTED = 20
# VGG-19 halves an image four times before its last style layer (relu5_1): a side under
# 16 px leaves nothing there, and the render fails, or makes a sliver of a picture.
MIN_SIDE = 16


def picture_problem(params: RenderParams, content_width: int, content_height: int) -> str | None:
    """Why this content and these parameters cannot make a picture, or None.

    Every scale of the schedule, the coarsest included, needs both sides of MIN_SIDE
    pixels: a 1x20000 content at size 48 would otherwise "succeed" as a 1x48 image.
    """
    plan = plan_scales(params, content_width, content_height)
    for scale in plan:
        if min(scale.width, scale.height) < MIN_SIDE:
            which = "the output" if scale is plan[-1] else f"scale {scale.index} of the schedule"
            return (f"{which} would be {scale.width}x{scale.height} pixels (content "
                    f"{content_width}x{content_height}): every scale needs both sides of at "
                    f"least {MIN_SIDE} px for the network to see a picture; raise size or "
                    f"min_size, or use a content image of a less extreme shape")
    return None


def image_sizes(session: Session, ids: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(width, height) of each image that exists, looked up once per distinct id."""
    wanted = sorted(set(ids))
    found: dict[str, tuple[int, int]] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start:start + _CHUNK]
        for image_id, width, height in session.execute(
                select(Image.id, Image.width, Image.height).where(Image.id.in_(chunk))):
            found[image_id] = (width, height)
    return found


def _image_refs(job: dict[str, Any], path: str) -> Iterable[tuple[str, str]]:
    """(field path, image id) of every image a job names."""
    yield f"{path}content", job["content"]
    for n, style in enumerate(job["styles"]):
        yield f"{path}styles.{n}.image", style["image"]
    if job.get("init_image"):
        yield f"{path}init_image", job["init_image"]


def check_jobs(session: Session, jobs: Sequence[dict[str, Any]], max_output_pixels: int,
               paths: Sequence[str] | None = None,
               workers: Sequence[WorkerMemory] = ()) -> dict[str, tuple[int, int]]:
    """Raise a 422 naming the fields whose images are unknown or whose output is too large,
    or that no worker in `workers` has the memory for (none given: not checked).

    `paths[i]` prefixes field names of job i ("jobs.3."); None names the fields of a
    single job. Returns the sizes of the images, for the caller's use.
    """
    prefixes = paths if paths is not None else [""] * len(jobs)
    ids = {image for job in jobs for _, image in _image_refs(job, "")}
    sizes = image_sizes(session, ids)
    fields: dict[str, list[str]] = {}
    if len(sizes) < len(ids):
        reported: set[str] = set()
        for job, prefix in zip(jobs, prefixes, strict=True):
            for path, image in _image_refs(job, prefix):
                if image not in sizes and image not in reported and len(fields) < _MAX_REPORTED:
                    reported.add(image)
                    fields[path] = [f"no image with id {image}: upload it with POST /v1/images"]
        raise ApiError(422, "unknown image id", fields)
    checked: dict[tuple[int, int, int], tuple[int, int]] = {}
    for job, prefix in zip(jobs, prefixes, strict=True):
        params: RenderParams = job["params"]
        content = sizes[job["content"]]
        key = (*content, id(params))
        if key not in checked:
            checked[key] = output_size(params, *content)
            width, height = checked[key]
            name = "params.width" if params.width is not None else "params.size"
            if width * height > max_output_pixels:
                fields[f"{prefix}{name}"] = [
                    f"output would be {width}x{height} = {width * height} pixels, over the "
                    f"limit of {max_output_pixels}"]
            elif problem := (picture_problem(params, *content)
                             or farm_problem(params, *content, list(workers))):
                fields[f"{prefix}{name}"] = [problem]
            if len(fields) >= _MAX_REPORTED:
                break
    if fields:
        raise ApiError(422, "the output is too large, too thin to be a picture, or needs more "
                       "memory than any worker has", fields)
    return sizes


def check_webhooks(urls: dict[str, str | None], allow_private: bool) -> None:
    """422 naming each webhook_url field (dotted path -> URL) the farm must not call."""
    fields = {path: [problem] for path, url in urls.items()
              if url and (problem := target_problem(url, allow_private=allow_private,
                                                    resolve=False))}
    if fields:
        raise ApiError(422, "webhook URL not allowed", dict(list(fields.items())[:_MAX_REPORTED]))


def insert_jobs(session: Session, jobs: Sequence[dict[str, Any]], *, owner: str,
                batch_id: str | None, created_at: datetime) -> list[tuple[str, int]]:
    """Insert the jobs with one executemany; returns (job id, priority) for enqueueing."""
    params_dicts: dict[int, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for job in jobs:
        params: RenderParams = job["params"]
        as_dict = params_dicts.get(id(params))
        if as_dict is None:
            as_dict = params_dicts[id(params)] = params.to_dict()
        rows.append({
            "id": new_id(),
            "batch_id": batch_id,
            "owner": owner,
            "content_image_id": job["content"],
            "styles": job["styles"],
            "init_image_id": job.get("init_image"),
            "params": as_dict,
            "priority": job["priority"],
            "webhook_url": job.get("webhook_url"),
            "status": Status.QUEUED.value,
            "progress": 0.0,
            "created_at": created_at,
            "attempts": 0,
        })
    if rows:
        if session.get_bind().dialect.name == "postgresql":
            _copy_rows(session, rows)
        else:
            _executemany_rows(session, rows)
    return [(row["id"], row["priority"]) for row in rows]


_JSON_COLUMNS = ("styles", "params")


def _driver_values(columns: list[str], rows: list[dict[str, Any]],
                   processors: list[Callable[[Any], Any] | None]) -> list[tuple[Any, ...]]:
    """Rows as tuples for the driver, each column's processor run once per distinct value
    object: a batch's 10,000 rows share one params dict, serialised once, not 10,000 times.
    Keyed by id(): the rows keep every value alive while this runs."""
    done: dict[tuple[int, int], Any] = {}

    def encode(column: int, value: Any) -> Any:
        process = processors[column]
        if process is None or value is None:
            return value
        key = (column, id(value))
        if key not in done:
            done[key] = process(value)
        return done[key]

    return [tuple(encode(i, row[name]) for i, name in enumerate(columns)) for row in rows]


def _executemany_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    """SQLite: one executemany on the driver, in the session's transaction, with the
    values SQLAlchemy's column types would bind (its own executemany processes every
    value of every row one by one)."""
    columns = list(rows[0])
    dialect = session.get_bind().dialect
    processors = [Job.__table__.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                  for name in columns]
    statement = (f"INSERT INTO {Job.__tablename__} ({', '.join(columns)}) "
                 f"VALUES ({', '.join('?' * len(columns))})")
    cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(statement, _driver_values(columns, rows, processors))
    finally:
        cursor.close()


def _copy_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    """PostgreSQL: COPY the rows in (psycopg 3), in the session's transaction.

    executemany sends one INSERT per row (pipelined), ~1.3 s for 10,000 jobs on two
    cores; COPY takes a third of that. psycopg adapts the other values itself.
    """
    columns = list(rows[0])
    processors = [json.dumps if name in _JSON_COLUMNS else None for name in columns]
    cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(f"COPY {Job.__tablename__} ({', '.join(columns)}) FROM STDIN") as copy:
            for values in _driver_values(columns, rows, processors):
                copy.write_row(values)
    finally:
        cursor.close()
