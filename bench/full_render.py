"""One full default render, timed scale by scale: where a big render spends its time.

Not a test: it prints a table (one row per scale: size, tile chosen by the memory plan,
iterations, wall seconds, seconds per iteration) and the whole render's wall time and
peak resident memory, then saves the picture.

    nice -n 10 uv run python bench/full_render.py                 # 2048 px, Tübingen x Starry
    uv run python bench/full_render.py --size 3840 --params '{"tile_size": 1024}'

A scale's wall time includes its set-up (style and content targets, the optimiser): the
time from the previous scale's last iteration to this one's.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bench/ first on sys.path would let bench/queue.py shadow the standard library's queue.
sys.path[0] = str(ROOT)

from shared import memory  # noqa: E402
from shared.spec import RenderParams, plan_scales, with_size_defaults  # noqa: E402
from worker.engine.device import activation_bytes, host_budget, memory_budget  # noqa: E402
from worker.engine.images import open_image  # noqa: E402
from worker.engine.render import ProgressEvent, RenderSpec, render  # noqa: E402

IMAGES = ROOT.parent / "shared" / "bench-images"
GIB = 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--content", default=str(IMAGES / "tubingen.jpg"))
    parser.add_argument("--style", default=str(IMAGES / "starry_night.jpg"))
    parser.add_argument("--size", type=int, default=2048, help="output long side")
    parser.add_argument("--params", default="{}", help="JSON overrides of RenderParams")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "full_render.png"))
    args = parser.parse_args()

    import torch

    content = open_image(Path(args.content), 10**9)
    style = open_image(Path(args.style), 10**9)
    params = RenderParams.from_dict({"size": args.size, "seed": 0, **json.loads(args.params)})
    dev = torch.device(args.device)
    resolved = with_size_defaults(params, *content.size)
    plan = plan_scales(resolved, *content.size)
    layout = memory.job_layout(resolved, *content.size, memory_budget(dev), activation_bytes(dev),
                               dev.type, host_budget(dev))
    ends: dict[int, float] = {}

    def note(event: ProgressEvent) -> None:
        ends[event.scale] = event.elapsed

    started = time.monotonic()
    image = render(RenderSpec(content, [style], params), on_progress=note, device=dev)
    wall = time.monotonic() - started
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out)

    print(f"{Path(args.content).stem} x {Path(args.style).stem}, {image.width}x{image.height}, "
          f"{resolved.optimizer}, {args.device}")
    print("| scale | size | tile | iterations | wall s | s/iteration |")
    print("|---|---|---|---|---|---|")
    previous = 0.0
    for scale in plan:
        seconds = ends[scale.index] - previous
        previous = ends[scale.index]
        tile = layout[scale.index].tile or "untiled"
        print(f"| {scale.index + 1} | {scale.width}x{scale.height} | {tile} | {scale.iterations} "
              f"| {seconds:.1f} | {seconds / scale.iterations:.2f} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"whole render {wall:.1f} s (model load included), peak resident {peak / GIB:.2f} GiB; "
          f"saved {args.out}")


if __name__ == "__main__":
    main()
