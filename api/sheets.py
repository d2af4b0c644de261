"""A batch's contact sheet: one labelled PNG cell per job, size-bounded, cached on disk.

The sheet is a pure function of the batch's jobs (their status and results), so it is
cached under sheets/ with a name made of the batch id and a digest of what it shows
(each job's id, status and result); the first request after any change makes a new one.
Cells shrink so that the whole sheet stays within MAX_SHEET_PIXELS: 10,000 jobs fit.
Results are decoded one at a time (Pillow's draft mode for JPEG, thumbnail for PNG),
so memory is the canvas plus one image.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.models import Job, Status
from shared.storage import Storage, atomic_write

MAX_SHEET_PIXELS = 16_000_000
LABEL_PX = 14
MIN_CELL, MAX_CELL = 24, 256
PAGE_ROWS = 1000


def cell_size(count: int, wanted: int) -> int:
    """The largest cell (at most `wanted`) that fits `count` cells in MAX_SHEET_PIXELS."""
    fit = int(math.sqrt(MAX_SHEET_PIXELS / max(1, count))) - LABEL_PX
    return max(MIN_CELL, min(wanted, MAX_CELL, fit))


def _jobs(session: Session, batch_id: str) -> Iterator[tuple[str, str, str, list, str | None]]:
    """(id, status, content, styles, result) in submission order, a page at a time."""
    last: tuple[Any, str] | None = None
    while True:
        query = select(Job.id, Job.status, Job.content_image_id, Job.styles, Job.result_path,
                       Job.created_at).where(Job.batch_id == batch_id)
        if last is not None:
            query = query.where((Job.created_at > last[0])
                                | ((Job.created_at == last[0]) & (Job.id > last[1])))
        rows = session.execute(query.order_by(Job.created_at, Job.id).limit(PAGE_ROWS)).all()
        for row in rows:
            yield row[0], row[1], row[2], row[3], row[4]
        if len(rows) < PAGE_ROWS:
            return
        last = (rows[-1][5], rows[-1][0])


def sheet(session: Session, storage: Storage, batch_id: str, wanted: int) -> Path:
    """The sheet's file for the batch as it is now (made if missing)."""
    jobs = list(_jobs(session, batch_id))
    digest = hashlib.sha256(f"{wanted}".encode())
    for job_id, status, _c, _s, result in jobs:
        digest.update(f"{job_id}:{status}:{result}\n".encode())
    path = storage.root / "sheets" / f"{batch_id}-{digest.hexdigest()[:16]}.png"
    if path.exists():
        return path
    for old in path.parent.glob(f"{batch_id}-*.png"):  # what the batch was before
        old.unlink(missing_ok=True)
    _draw(jobs, storage, path, cell_size(len(jobs), wanted))
    return path


def _draw(jobs: list[tuple[str, str, str, list, str | None]], storage: Storage, path: Path,
          cell: int) -> None:
    columns = max(1, min(len(jobs), math.ceil(math.sqrt(len(jobs)))))
    rows = max(1, math.ceil(len(jobs) / columns))
    canvas = PILImage.new("RGB", (columns * cell, rows * (cell + LABEL_PX)), (246, 246, 248))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for n, (_job_id, status, content, styles, result) in enumerate(jobs):
        x, y = (n % columns) * cell, (n // columns) * (cell + LABEL_PX)
        if status == Status.SUCCEEDED.value and result:
            try:
                with PILImage.open(storage.resolve(result)) as image:
                    image.draft("RGB", (cell, cell))
                    image = image.convert("RGB")
                    image.thumbnail((cell, cell))
                    canvas.paste(image, (x + (cell - image.width) // 2,
                                         y + (cell - image.height) // 2))
            except OSError:
                status = "missing"
        if status != Status.SUCCEEDED.value:
            draw.rectangle([x + 1, y + 1, x + cell - 2, y + cell - 2], fill=(225, 225, 232))
            draw.text((x + 4, y + cell // 2 - 6), status, fill=(90, 90, 100), font=font)
        label = f"{content[:6]}×{styles[0]['image'][:6] if styles else '-'}"
        draw.text((x + 2, y + cell + 1), label[: max(1, cell // 6)], fill=(40, 40, 50),
                  font=font)
    atomic_write(path, lambda handle: canvas.save(handle, "PNG", optimize=False))
