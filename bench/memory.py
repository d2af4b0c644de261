"""Peak memory and time per iteration, untiled against tiled, at the top scale.

    nice -n 10 .venv/bin/python bench/memory.py [--sizes 512 1024 2048 3840 7680]
        [--tile 512] [--measure-limit-gib 12] [--skip-tiled-above 3840] [--precision bf16]

Each measurement runs in its own process, which inherits the bench's niceness (peak
resident memory is a process's high-water mark): the top scale of a 16:9 job, set up as
a render sets it up (style targets, content target, optimiser), then two L-BFGS
iterations (history 1, see `job`), timed on the second. The last column predicts the
whole default job (history 20) tiled, and the column after it the same job as the plan
would run it on a GPU (bf16) with the image and the optimiser in host memory: device
bytes, then host bytes (predicted only: no GPU has measured it). Where a run would not fit
`--measure-limit-gib` by the memory plan (shared/memory.py), the table shows the plan's
prediction instead, marked "pred". `--precision bf16` runs the GPU's reduced-precision
path (bf16 convolutions, channels_last; STYLEFARM_PRECISION) and predicts with the plan's
2-byte constants, so the table checks those constants against measured peaks. Not a
test: the numbers depend on the machine.

On a GPU, `--device cuda` measures the device's peak (torch.cuda.max_memory_allocated,
beside the plan's prediction for the GPU), and `--image-on-host` runs the tiled column
with the image, its gradient, the content target and the optimiser in host memory (the
plan's "image" placement), so that column shows what the device holds of it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

# The repository, not bench/ (whose queue.py would shadow the standard library's).
sys.path[0] = str(Path(__file__).resolve().parents[1])

from shared import memory  # noqa: E402
from shared.spec import RenderParams, plan_scales, with_size_defaults  # noqa: E402

GIB = 2**30


def job(width: int, height: int, tile: int | None, history: int = 1) -> RenderParams:
    """The measured job. L-BFGS history 1: its slots are allocated at once but become
    resident only when written, so two iterations of history 20 would leave 19 of them
    uncounted by the resident high-water mark; the full history is added by prediction."""
    params = RenderParams(width=width, height=height, min_size=max(width, height),
                          iterations=(2,), tile_size=tile, lbfgs_history=history)
    return with_size_defaults(params, width, height)


def plan_peak(width: int, height: int, tile: int | None, history: int = 1,
              dtype_bytes: int = 4, device: str = "cpu", image_on_host: bool = False
              ) -> memory.Peak:
    """The plan's peak for the top scale of `job`, the image in host memory if asked (and
    tiled: the placement needs a tile)."""
    params = job(width, height, tile, history)
    scale = plan_scales(params, width, height)[-1]
    on_host = image_on_host and tile is not None
    return memory.scale_peak(params, scale, max(width, height), tile, dtype_bytes, device,
                             on_host, on_host)


def predicted(width: int, height: int, tile: int | None, history: int = 1,
              dtype_bytes: int = 4, device: str = "cpu", image_on_host: bool = False) -> int:
    peak = plan_peak(width, height, tile, history, dtype_bytes, device, image_on_host)
    # On a CPU the host is the device: what the plan moves there is still resident.
    return peak.total + (peak.host if device == "cpu" else 0)


def gpu_image_on_host(width: int, height: int, tile: int) -> memory.Peak:
    """The default job's top scale on a GPU with the whole image in host memory."""
    return plan_peak(width, height, tile, 20, 2, "cuda", True)


def gpu_ratio(high: int, low: int, tile: int) -> float:
    def device(side: int) -> int:
        return gpu_image_on_host(side, round(side * 9 / 16), tile).total
    return device(high) / device(low)


def child(width: int, height: int, tile: int | None, device: str, image_on_host: bool
          ) -> None:
    """One measurement, printed as JSON: peak bytes (resident on a CPU, allocated on a
    GPU), seconds of the 2nd iteration."""
    import numpy as np
    import torch
    from PIL import Image

    from worker.engine import render as engine
    from worker.engine.vgg import load_vgg

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    content = Image.fromarray(np.stack([xx * 255 // width, yy * 255 // height,
                                        (xx + yy) % 256], -1).astype(np.uint8))
    style = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    params = job(width, height, tile)
    scale = plan_scales(params, width, height)[-1]
    dev = torch.device(device)
    home = torch.device("cpu") if image_on_host and tile is not None else dev
    weights = engine.style_layer_weights(params)
    model = load_vgg("max", dev, "relu5_1")
    targets = engine._style_targets(model, params, scale, max(width, height), [style], None,
                                    weights, dev, None, tile)
    objective = engine._objective(model, params, scale, content, targets, [1.0], weights,
                                  home, tile, always_tiled=home != dev)
    x = engine._start(None, scale, params, content, None, torch.Generator(), home)
    optimizer = engine._optimizer(params, scale, None, home)
    seconds = 0.0
    for _ in range(2):
        started = time.perf_counter()
        _, grad = objective(x)
        optimizer.step(x, grad)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else _resident_peak()
    print(json.dumps({"peak": peak, "seconds": seconds}))


def _resident_peak() -> int:
    """This process's own peak resident bytes. Linux's ru_maxrss is no good here: exec keeps
    the forking parent's high-water mark, so a child forked from a 1.2 GB test process read
    1.2 GB whatever it used; VmHWM belongs to the exec'd image alone."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(width: int, height: int, tile: int | None, device: str, image_on_host: bool
            ) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--device", device,
         *(["--image-on-host"] if image_on_host else []),
         "--child", str(width), str(height), str(tile or 0)],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 3840, 7680])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--measure-limit-gib", type=float, default=12.0)
    parser.add_argument("--skip-tiled-above", type=int, default=3840,
                        help="predict, not measure, tiled runs above this long side (time)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--image-on-host", action="store_true",
                        help="tiled runs keep the image and optimiser in host memory (GPU)")
    parser.add_argument("--child", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["STYLEFARM_PRECISION"] = args.precision  # the children inherit it
    width_bytes = 2 if args.precision == "bf16" else 4
    if args.child:
        width, height, tile = args.child
        child(width, height, tile or None, args.device, args.image_on_host)
        return
    limit = args.measure_limit_gib * GIB
    print(f"top scale, 2 L-BFGS iterations (history 1), {args.precision}, {args.device}"
          f"{', image on host' if args.image_on_host else ''}; "
          f"tile {args.tile} px, "
          f"halo {memory.HALO} px")
    header = (f"{'size':>11} | {'untiled peak':>16} {'s/it':>7} | {'tiled peak':>16} "
              f"{'s/it':>7} | {'peak ratio':>10} {'time ratio':>10} | {'h20 tiled':>9} | "
              f"{'GPU, image on host':>18}")
    print(header)
    print("-" * len(header))
    rows = {}
    for side in args.sizes:
        width, height = side, round(side * 9 / 16)
        cells = {}
        for name, tile in (("untiled", None), ("tiled", args.tile)):
            guess = predicted(width, height, tile, 1, width_bytes, args.device,
                              args.image_on_host)
            too_slow = tile is not None and side > args.skip_tiled_above
            if guess > limit or too_slow:
                cells[name] = {"peak": guess, "seconds": float("nan"), "pred": True}
            else:
                got = measure(width, height, tile, args.device, args.image_on_host)
                cells[name] = {**got, "pred": False, "predicted": guess}
        rows[side] = cells
        u, t = cells["untiled"], cells["tiled"]
        gpu = gpu_image_on_host(width, height, args.tile)

        def peak(c: dict) -> str:
            text = f"{c['peak'] / GIB:.2f} GiB"
            if c["pred"]:
                return text + " pred"
            return text + f" ({c['predicted'] / GIB:.2f})"

        print(f"{width:>5}x{height:<5} | {peak(u):>16} {u['seconds']:>7.2f} | {peak(t):>16} "
              f"{t['seconds']:>7.2f} | {t['peak'] / u['peak']:>10.2f} "
              f"{t['seconds'] / u['seconds']:>10.2f} | "
              f"{predicted(width, height, args.tile, 20, width_bytes) / GIB:>5.2f} GiB | "
              f"{gpu.total / GIB:>5.2f} + {gpu.host / GIB:>5.2f} GiB", flush=True)
    print("(peak: measured high-water mark, resident on a CPU, allocated on a GPU; the "
          "plan's prediction in brackets; "
          "'pred': predicted only)")
    sides = sorted(rows)
    if len(sides) > 1:
        low, high = rows[sides[0]]["tiled"]["peak"], rows[sides[-1]]["tiled"]["peak"]
        print(f"tiled peak {sides[-1]} / {sides[0]}: {high / low:.2f}x; on a GPU with the "
              f"image on the host, predicted device peak: "
              f"{gpu_ratio(sides[-1], sides[0], args.tile):.2f}x")


if __name__ == "__main__":
    main()
