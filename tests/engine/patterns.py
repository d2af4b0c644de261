"""Test images generated in code: small, deterministic, with known colour statistics."""

from __future__ import annotations

import numpy as np
from PIL import Image


def gradient(width: int, height: int, start: tuple[int, int, int] = (200, 60, 40),
             end: tuple[int, int, int] = (250, 180, 90)) -> Image.Image:
    """Diagonal blend between two colours (default: warm reds and oranges)."""
    yy, xx = np.mgrid[0:height, 0:width]
    t = ((xx / max(width - 1, 1) + yy / max(height - 1, 1)) / 2)[..., None]
    pixels = np.array(start) * (1 - t) + np.array(end) * t
    return Image.fromarray(pixels.round().astype(np.uint8), "RGB")


def stripes(width: int, height: int, period: int = 8,
            colors: tuple[tuple[int, int, int], tuple[int, int, int]] = ((20, 40, 200),
                                                                         (240, 240, 60)),
            vertical: bool = False) -> Image.Image:
    coords = np.arange(width if vertical else height)
    band = (coords // (period // 2)) % 2
    pixels = np.array(colors)[band]  # (n, 3)
    grid = pixels[None, :, :].repeat(height, 0) if vertical else pixels[:, None, :].repeat(width, 1)
    return Image.fromarray(grid.astype(np.uint8), "RGB")


def checkerboard(width: int, height: int, cell: int = 6,
                 colors: tuple[tuple[int, int, int], tuple[int, int, int]] = ((10, 160, 30),
                                                                              (230, 30, 200))
                 ) -> Image.Image:
    yy, xx = np.mgrid[0:height, 0:width]
    band = ((xx // cell) + (yy // cell)) % 2
    return Image.fromarray(np.array(colors)[band].astype(np.uint8), "RGB")


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def scene(width: int, height: int) -> Image.Image:
    """A content image with structure: a gradient with a bright disc and a dark bar."""
    pixels = np.asarray(gradient(width, height)).astype(np.float64)
    yy, xx = np.mgrid[0:height, 0:width]
    disc = (xx - width * 0.35) ** 2 + (yy - height * 0.45) ** 2 < (min(width, height) * 0.22) ** 2
    pixels[disc] = (250, 240, 220)
    pixels[int(height * 0.7):int(height * 0.8), int(width * 0.5):] = (40, 30, 30)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def chroma_mean(image: Image.Image) -> np.ndarray:
    """Mean I and Q (YIQ chroma) of an image: where its colours lie, regardless of brightness."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3)
    yiq = rgb @ np.array([[0.299, 0.587, 0.114],
                          [0.595716, -0.274453, -0.321263],
                          [0.211456, -0.522591, 0.311135]]).T
    return yiq[:, 1:].mean(0)


def sideways_jpeg(width: int = 48, height: int = 32) -> bytes:
    """A JPEG stored `width` x `height` with EXIF orientation 6 ("turn 90° clockwise to
    view"), as a phone held upright writes it: upright, it is `height` x `width`.

    The stored picture is red on its left half, blue on its right, so upright the red is
    on top."""
    import io

    image = Image.new("RGB", (width, height), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, width // 2, height))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif)
    return buffer.getvalue()
