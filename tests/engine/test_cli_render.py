"""`stylefarm render` / `demo` as a user runs them: in a subprocess, judged by exit status,
stderr and the files left behind."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.engine.patterns import checkerboard, gradient, noise

ROOT = Path(__file__).resolve().parents[2]


def stylefarm(*args: str, env: dict[str, str] | None = None,
              cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    code = "import sys; from cli.main import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                          timeout=240)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    gradient(48, 36).save(folder / "content.png")
    checkerboard(40, 40).save(folder / "style.png")
    gradient(120, 100).save(folder / "big.png")
    (folder / "notes.png").write_text("not an image")
    buffer = io.BytesIO()
    noise(64, 64).save(buffer, "JPEG")
    (folder / "cut.jpg").write_bytes(buffer.getvalue()[:300])
    return folder


def _one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("stylefarm: error: "), lines[0]
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "expected"), [
    (["missing.png", "style.png"], "missing.png: no such file"),
    (["notes.png", "style.png"], "notes.png: not an image"),
    (["cut.jpg", "style.png"], "cut.jpg: cannot decode"),
    (["content.png", "style.png", "--max-pixels", "1000"], "more than the limit of 1000"),
    (["content.png", "style.png", "--size", "3"], "--size: Must be greater than or equal to 16"),
    (["content.png", "style.png", "--size", "big"], "--size: Not a valid integer."),
    (["content.png", "style.png", "--optimizer", "sgd"],
     "--optimizer: Must be one of: lbfgs, adam"),
    (["content.png", "style.png", "--width", "40"], "--height: width and height must be given"),
    (["content.png", "style.png", "--style-layer-weights", "relu9_9=1"], "--style-layer-weights"),
    (["content.png", "style.png", "--content-layer-weights", "relu1_1=1"],
     "--content-layer-weights"),
    (["content.png", "style.png", "--content-layer-weights", "relu5_1"], "expected LAYER=WEIGHT"),
    (["content.png", "style.png", "--init", "image"], "--init: 'image' needs --init-image"),
    (["content.png", "style.png", "--bogus"], "unrecognized arguments: --bogus"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_bad_input_gives_one_line_and_exit_2(inputs: Path, args: list[str], expected: str) -> None:
    _one_line_error(stylefarm("render", *args, "-o", "out.png", cwd=inputs), expected)
    assert not (inputs / "out.png").exists()


def test_input_pixel_limit_comes_from_the_environment(inputs: Path) -> None:
    result = stylefarm("render", "big.png", "style.png", "-o", "out.png", cwd=inputs,
                       env={"STYLEFARM_MAX_INPUT_PIXELS": "11999"})
    _one_line_error(result, "big.png: 120x100 is 12000 pixels, more than the limit of 11999")


def test_unknown_output_extension(inputs: Path) -> None:
    result = stylefarm("render", "content.png", "style.png", "-o", "out.gif", cwd=inputs)
    _one_line_error(result, "unknown output extension '.gif'")


def test_missing_arguments_are_one_line_too() -> None:
    _one_line_error(stylefarm("render"), "the following arguments are required")
    _one_line_error(stylefarm("paint"), "invalid choice: 'paint'")


def test_render_writes_the_image_with_its_parameters(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "result.png"
    result = stylefarm("render", str(inputs / "content.png"), str(inputs / "style.png"),
                       str(inputs / "style.png"), "-o", str(out), "--size", "40",
                       "--min-size", "20", "--iterations", "2", "--style-weights", "3", "1",
                       "--preserve-color", "histogram", "--seed", "5",
                       "--content-layer-weights", "relu4_2=1", "relu5_1=0.5", "-q")
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:
        assert image.size == (40, 30)
        metadata = json.loads(image.text["stylefarm"])
    assert metadata["params"]["size"] == 40
    assert metadata["params"]["style_weights"] == [3.0, 1.0]
    assert metadata["params"]["preserve_color"] == "histogram"
    assert metadata["params"]["content_layer_weights"] == {"relu4_2": 1.0, "relu5_1": 0.5}
    assert metadata["styles"] == ["style.png", "style.png"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["result.png"]


def test_auto_leaves_the_size_dependent_default_to_the_render() -> None:
    """`auto` (or `none`) gives null to every field that takes it, a layer dict included;
    the render fills it in for the output's size."""
    from cli.main import build_parser
    from cli.render import params_from_args
    args = build_parser().parse_args(["render", "c.png", "s.png", "-o", "x.png",
                                      "--content-layer-weights",
                                      "auto", "--tile-size", "none", "--style-weight", "auto"])
    params = params_from_args(args)
    assert (params.content_layer_weights, params.tile_size, params.style_weight) == (
        None, None, None)


def test_render_shows_progress_and_writes_jpeg(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "result.jpg"
    result = stylefarm("render", str(inputs / "content.png"), str(inputs / "style.png"),
                       "-o", str(out), "--size", "32", "--min-size", "32", "--iterations", "2",
                       "--optimizer", "adam")
    assert result.returncode == 0, result.stderr
    assert "overall" in result.stderr and "scale 1/1" in result.stderr
    with Image.open(out) as image:
        assert image.format == "JPEG" and image.size == (32, 24)
