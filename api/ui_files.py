"""The dashboard's images: thumbnails of results and inputs, previews, full results.

Thumbnails are made on first request and kept beside the results (thumbs/ on the
storage volume), remade when their source is newer (a retried job's new result), so a
page of 60 cards decodes at most 60 images once, not at every view. A running job's
card shows its preview (at most 512 px, rewritten by the worker every few seconds).
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Response, abort, request, send_file
from PIL import Image as PILImage

from api.context import storage
from shared.models import Job, Status
from shared.storage import atomic_write

THUMB_PX = 192
INPUT_THUMB_PX = 96
_PLACEHOLDER = ('<svg xmlns="http://www.w3.org/2000/svg" width="192" height="192">'
                '<rect width="100%" height="100%" fill="#e8e8ec"/>'
                '<text x="50%" y="50%" font-family="sans-serif" font-size="16" fill="#777" '
                'text-anchor="middle" dominant-baseline="middle">{label}</text></svg>')


def thumbnail(source: Path, target: Path, size: int) -> Path:
    """`target`, a JPEG of `source` at most `size` px, remade when the source is newer."""
    try:
        if target.stat().st_mtime_ns >= source.stat().st_mtime_ns:
            return target
    except FileNotFoundError:
        pass
    with PILImage.open(source) as image:
        image.draft("RGB", (size, size))
        image = image.convert("RGB")
        image.thumbnail((size, size))
        atomic_write(target, lambda handle: image.save(handle, "JPEG", quality=80))
    return target


def job_thumb(job: Job) -> Response:
    """The result's thumbnail, else the live preview, else a placeholder naming the status."""
    store = storage()
    if job.status == Status.SUCCEEDED.value and job.result_path:
        source = store.resolve(job.result_path)
        if source.exists():
            path = thumbnail(source, store.root / "thumbs" / f"{job.id}.jpg", THUMB_PX)
            return send_file(path, mimetype="image/jpeg", max_age=3600, conditional=True)
    if job.preview_path:
        source = store.resolve(job.preview_path)
        if source.exists():
            return _fresh(send_file(source, mimetype="image/jpeg", conditional=True))
    reply = Response(_PLACEHOLDER.format(label=job.status), mimetype="image/svg+xml")
    return _fresh(reply)


def input_thumb(image_id: str) -> Response:
    store = storage()
    source = store.image_path(image_id)
    if not source.exists():
        abort(404)
    path = thumbnail(source, store.root / "thumbs" / "inputs" / f"{image_id}.jpg",
                     INPUT_THUMB_PX)
    return send_file(path, mimetype="image/jpeg", max_age=86400, conditional=True)


def job_preview(job: Job) -> Response:
    if not job.preview_path or not storage().resolve(job.preview_path).exists():
        abort(404)
    return _fresh(send_file(storage().resolve(job.preview_path), mimetype="image/jpeg",
                            conditional=True))


def job_result(job: Job) -> Response:
    if job.status != Status.SUCCEEDED.value or not job.result_path:
        abort(404)
    path = storage().resolve(job.result_path)
    if not path.exists():
        abort(404)
    download = request.args.get("download") == "1"
    return send_file(path, mimetype="image/png", conditional=True, as_attachment=download,
                     download_name=f"{job.id}{os.path.splitext(path.name)[1]}")


def _fresh(reply: Response) -> Response:
    reply.headers["Cache-Control"] = "no-cache"
    return reply
