"""Reading inputs strictly, writing outputs atomically, with the parameters in PNGs."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from tests.engine.patterns import gradient, noise, sideways_jpeg
from worker.engine.images import (
    ImageError,
    open_image,
    read_metadata,
    save_image,
    to_pil,
    to_tensor,
)


@pytest.mark.parametrize(("name", "fmt"), [
    ("out.png", "PNG"), ("out.jpg", "JPEG"), ("out.JPEG", "JPEG"), ("out.webp", "WEBP"),
    ("out.tif", "TIFF"), ("out.tiff", "TIFF"),
])
def test_format_follows_the_extension(tmp_path: Path, name: str, fmt: str) -> None:
    save_image(gradient(40, 30), tmp_path / name)
    with Image.open(tmp_path / name) as image:
        assert image.format == fmt
        assert image.size == (40, 30)


def test_png_keeps_the_parameters_as_json(tmp_path: Path) -> None:
    params = {"params": {"size": 40, "iterations": [3, 2]}, "styles": ["a.png"]}
    save_image(gradient(40, 30), tmp_path / "out.png", params)
    assert read_metadata(tmp_path / "out.png") == params
    with Image.open(tmp_path / "out.png") as image:
        assert "stylefarm" in image.text


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    save_image(gradient(40, 30), tmp_path / "out.png")
    save_image(noise(40, 30), tmp_path / "out.png")  # replace an existing file
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    with pytest.raises(ImageError):
        save_image(gradient(40, 30), tmp_path / "out.bmpx")
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    save_image(gradient(40, 30), tmp_path / "out.png")
    before = (tmp_path / "out.png").read_bytes()

    def crash(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("worker.engine.images.os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_image(noise(40, 30), tmp_path / "out.png")
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    assert (tmp_path / "out.png").read_bytes() == before


def test_open_rejects_bad_inputs_with_the_file_name(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        open_image(tmp_path / "missing.png", 10**6)
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageError, match="not an image"):
        open_image(tmp_path / "text.png", 10**6)
    buffer = io.BytesIO()
    noise(64, 64).save(buffer, "PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match=r"cut\.png"):
        open_image(tmp_path / "cut.png", 10**6)
    gradient(100, 50).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="5000 pixels"):
        open_image(tmp_path / "big.png", 4999)
    assert open_image(tmp_path / "big.png", 5000).size == (100, 50)


def test_transparent_and_grey_images_become_rgb(tmp_path: Path) -> None:
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    assert open_image(tmp_path / "clear.png", 100).getpixel((0, 0)) == (255, 255, 255)
    Image.new("L", (4, 4), 77).save(tmp_path / "grey.png")
    assert open_image(tmp_path / "grey.png", 100).getpixel((1, 1)) == (77, 77, 77)


def test_tensor_round_trip_is_exact() -> None:
    image = noise(33, 17, seed=5)
    tensor = to_tensor(image)
    assert tensor.shape == (1, 3, 17, 33)
    assert to_pil(tensor).tobytes() == image.tobytes()


def test_exif_orientation_is_applied_when_decoding(tmp_path: Path) -> None:
    path = tmp_path / "portrait.jpg"
    path.write_bytes(sideways_jpeg(48, 32))
    with Image.open(path) as stored:
        assert stored.size == (48, 32)  # as the sensor saw it
    image = open_image(path, 10_000)
    assert image.size == (32, 48)  # upright: a portrait
    top, bottom = image.getpixel((16, 4)), image.getpixel((16, 44))
    assert top[0] > 200 and top[2] < 60, top  # the stored left half (red) is now on top
    assert bottom[2] > 200 and bottom[0] < 60, bottom
