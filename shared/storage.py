"""Where bytes live on the shared volume: content-addressed inputs, results, previews.

Everything is written atomically (temp file in the same directory, then rename), so a
reader (the API serving a result, a worker loading an image) never sees half a file,
and a worker killed mid-write leaves at most a stray temp file, never a corrupt result.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: Path, write: Callable[[BinaryIO], None] | bytes) -> Path:
    """Write `path` all at once: readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(write, bytes | bytearray):
                handle.write(write)
            else:
                write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are read by the API and users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class Storage:
    """The layout under the storage root (the data directory, or a volume shared by the farm).

    images/ab/abcdef...         uploaded inputs, named by the sha256 of their bytes
    results/<job id>.<ext>      finished renders
    previews/<job id>.jpg       the latest intermediate image of a running job
    checkpoints/<job id>.pt     a running job after its last completed scale (worker only)
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def image_path(self, sha256: str) -> Path:
        return self.root / "images" / sha256[:2] / sha256

    def put_image(self, data: bytes) -> tuple[str, Path]:
        """Store uploaded bytes once, however often they are uploaded."""
        digest = sha256_hex(data)
        path = self.image_path(digest)
        if not path.exists():
            atomic_write(path, data)
        return digest, path

    def result_path(self, job_id: str, extension: str = "png") -> Path:
        return self.root / "results" / f"{job_id}.{extension.lstrip('.')}"

    def preview_path(self, job_id: str) -> Path:
        return self.root / "previews" / f"{job_id}.jpg"

    def checkpoint_path(self, job_id: str) -> Path:
        return self.root / "checkpoints" / f"{job_id}.pt"

    def relative(self, path: Path) -> str:
        """The form stored in the database: relative, so the volume can be mounted anywhere."""
        return str(Path(path).relative_to(self.root))

    def resolve(self, stored: str) -> Path:
        return self.root / stored
