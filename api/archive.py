"""A batch's results as one zip, streamed: written as it is sent, never held whole.

zipfile can write to a stream that cannot seek (it then puts each member's sizes in a
data descriptor after the data); `_Chunks` is such a stream that hands what zipfile
wrote to the response a piece at a time. Results are PNGs, already compressed: they go
in stored, read in 1 MiB pieces. The manifest (manifest.json: each job's id, inputs,
params, status and timings) is written last, a page of jobs at a time.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.models import Job, JobAttempt, Status, aware
from shared.storage import Storage

CHUNK = 1 << 20
PAGE_ROWS = 500


class _Chunks:
    """A write-only, non-seekable file whose writes are collected until taken."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._offset = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._offset += len(data)
        return len(data)

    def tell(self) -> int:  # zipfile asks where it is; it never seeks
        return self._offset

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _pages(session: Session, batch_id: str) -> Iterator[list[Job]]:
    last: tuple[Any, str] | None = None
    while True:
        query = select(Job).where(Job.batch_id == batch_id)
        if last is not None:
            query = query.where((Job.created_at > last[0])
                                | ((Job.created_at == last[0]) & (Job.id > last[1])))
        rows = list(session.scalars(query.order_by(Job.created_at, Job.id).limit(PAGE_ROWS)))
        if rows:
            yield rows
        if len(rows) < PAGE_ROWS:
            return
        last = (rows[-1].created_at, rows[-1].id)
        session.expunge_all()  # a page at a time in memory, not the batch


def member_name(job: Job) -> str:
    style = job.styles[0]["image"][:8] if job.styles else "none"
    return f"results/{job.content_image_id[:8]}__{style}__{job.id}.png"


def stream(session: Session, storage: Storage, batch_id: str) -> Iterator[bytes]:
    out = _Chunks()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for page in _pages(session, batch_id):
            for job in page:
                if job.status != Status.SUCCEEDED.value or not job.result_path:
                    continue
                path = storage.resolve(job.result_path)
                if not path.exists():
                    continue
                info = zipfile.ZipInfo(member_name(job), date_time=_stamp(job))
                with archive.open(info, "w", force_zip64=True) as member, \
                        open(path, "rb") as source:
                    while block := source.read(CHUNK):
                        member.write(block)
                        yield out.take()
                yield out.take()
        with archive.open("manifest.json", "w", force_zip64=True) as member:
            member.write(b'{"batch": ' + json.dumps(batch_id).encode() + b', "jobs": [\n')
            first = True
            for page in _pages(session, batch_id):
                timings = _timings(session, [job.id for job in page])
                for job in page:
                    entry = manifest_entry(job, timings.get(job.id, []))
                    member.write((b"" if first else b",\n") + json.dumps(entry).encode())
                    first = False
                yield out.take()
            member.write(b"\n]}\n")
    yield out.take()


def _stamp(job: Job) -> tuple[int, int, int, int, int, int]:
    moment = aware(job.finished_at) or aware(job.created_at)
    return moment.timetuple()[:6] if moment else (1980, 1, 1, 0, 0, 0)


def _timings(session: Session, job_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for run in session.scalars(select(JobAttempt).where(JobAttempt.job_id.in_(job_ids))
                               .order_by(JobAttempt.id)):
        out.setdefault(run.job_id, []).append({
            "number": run.number, "worker": run.worker,
            "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at),
            "outcome": run.outcome, "scale_seconds": run.scale_seconds})
    return out


def manifest_entry(job: Job, runs: list[dict[str, Any]]) -> dict[str, Any]:
    succeeded = job.status == Status.SUCCEEDED.value and bool(job.result_path)
    return {
        "job": job.id, "status": job.status,
        "file": member_name(job) if succeeded else None,
        "content": job.content_image_id, "styles": job.styles, "init_image": job.init_image_id,
        "params": job.params,
        "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at), "attempts": runs,
    }


def _iso(moment: Any) -> str | None:
    moment = aware(moment)
    return moment.isoformat() if moment else None
