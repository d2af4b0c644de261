"""What a per-scale checkpoint costs: file size, write (fsynced) and read time. Not a test.

    uv run python bench/checkpoint.py [--sizes 1024 2048 3840] [--dir DIR]

A worker writes one after each scale but the last; this is the pause it adds to a render,
for L-BFGS (the image only) and Adam (the image, two moments and the averaged image), at
16:9 frames of the given long sides. Write into --dir to measure the farm's storage
volume rather than the local disk.
"""

# ruff: noqa: E402 - the path fix below must run before the imports
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ comes first on sys.path, and bench/queue.py would shadow the
# standard library's `queue` (which torch imports). Use the repo root instead.
ROOT = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)

import argparse
import tempfile
import time

import torch

from shared.storage import atomic_write
from worker.engine.checkpoint import Checkpoint
from worker.engine.optimize import AdamState


def measure(checkpoint: Checkpoint, path: Path) -> tuple[int, float, float]:
    started = time.perf_counter()
    atomic_write(path, lambda handle: torch.save(checkpoint.to_dict(), handle))
    wrote = time.perf_counter() - started
    started = time.perf_counter()
    Checkpoint.from_dict(torch.load(path, map_location="cpu", weights_only=True))
    read = time.perf_counter() - started
    return path.stat().st_size, wrote, read


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 3840])
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="stylefarm-ckpt-"))
    print(f"writing to {folder}")
    print(f"{'frame':>11} | {'optimizer':>9} | {'file MB':>8} | {'write ms':>8} | {'read ms':>8}")
    print("-" * 57)
    for long_side in args.sizes:
        width, height = long_side, round(long_side * 9 / 16)
        x = torch.randn(1, 3, height, width)
        for name, adam in (("lbfgs", None), ("adam", AdamState(
                step=300, m=torch.randn_like(x), v=torch.rand_like(x), ema=torch.randn_like(x)))):
            size, wrote, read = measure(Checkpoint(1, 4, x, adam, 12.5), folder / f"{name}.pt")
            print(f"{width:>5}x{height:<5} | {name:>9} | {size / 1e6:8.1f} | {wrote * 1000:8.0f} "
                  f"| {read * 1000:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
