"""Images in and out: validation, resizing, PIL <-> Caffe tensors, atomic saving.

Caffe tensors are what VGG-19 was trained on: (1, 3, H, W), BGR, 0..255 minus the ImageNet
mean. The optimised image lives in that space, so no conversion sits inside the loop.

Reading and writing do not import torch (it is imported inside the tensor conversions), so
the CLI and the API can check inputs in milliseconds.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from PIL import Image, ImageOps, PngImagePlugin

from shared.storage import atomic_write

if TYPE_CHECKING:
    import torch

# VGG-19's training-set mean, BGR, subtracted from its inputs.
BGR_MEAN = (103.939, 116.779, 123.68)

# Extension -> PIL format and save options. PNG is lossless; the others at high quality.
FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    ".png": ("PNG", {}),
    ".jpg": ("JPEG", {"quality": 95}),
    ".jpeg": ("JPEG", {"quality": 95}),
    ".webp": ("WEBP", {"quality": 95}),
    ".tif": ("TIFF", {"compression": "tiff_deflate"}),
    ".tiff": ("TIFF", {"compression": "tiff_deflate"}),
}
METADATA_KEY = "stylefarm"


class ImageError(ValueError):
    """An input or output image the engine cannot use; the message is for the user."""


def open_image(source: str | os.PathLike[str] | IO[bytes], max_pixels: int,
               name: str | None = None) -> Image.Image:
    """Open, check and fully decode an image as RGB, upright.

    A phone photo is stored as the sensor saw it, with an EXIF tag saying how to turn it:
    the tag is applied here (as every viewer does), so a portrait photo renders as one.
    The pixel count is checked from the header, before decoding, so an oversized upload
    costs nothing; decoding here (not lazily later) makes truncated files fail now, with
    the file's name, rather than deep inside a render.
    """
    label = name or (str(source) if isinstance(source, str | os.PathLike) else "image")
    if isinstance(source, str | os.PathLike) and not Path(source).is_file():
        raise ImageError(f"{label}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"{label}: {width}x{height} is {width * height} pixels, "
                                 f"more than the limit of {max_pixels}")
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{label}: too many pixels ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageError(f"{label}: not an image (or a format Pillow cannot read)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{label}: cannot decode image ({exc})") from exc
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels carry arbitrary colours; composite on white as viewers show them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Bicubic with Pillow's antialiasing (it widens the filter when shrinking)."""
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.BICUBIC)


def trim_margin(image: Image.Image, fraction: float) -> Image.Image:
    """The image without `fraction` of its width and height along each border."""
    width, height = image.size
    dx, dy = round(width * fraction), round(height * fraction)
    if not (dx or dy) or width - 2 * dx < 1 or height - 2 * dy < 1:
        return image
    return image.crop((dx, dy, width - dx, height - dy))


def fit_long_side(width: int, height: int, long_side: int) -> tuple[int, int]:
    ratio = long_side / max(width, height)
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def to_tensor(image: Image.Image, device: torch.device | str = "cpu") -> torch.Tensor:
    import torch

    rgb = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
    rgb = rgb.view(image.height, image.width, 3).permute(2, 0, 1).float()
    bgr = rgb.flip(0) - torch.tensor(BGR_MEAN).view(3, 1, 1)
    return bgr.unsqueeze(0).to(device)


def to_pil(tensor: torch.Tensor) -> Image.Image:
    import torch

    bgr = tensor.detach().float().squeeze(0).cpu() + torch.tensor(BGR_MEAN).view(3, 1, 1)
    rgb = bgr.flip(0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()
    return Image.fromarray(rgb.numpy(), "RGB")


def output_format(path: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(sorted(FORMATS))
        raise ImageError(
            f"{path}: unknown output extension {suffix or '(none)'!r}; use one of {known}")
    return FORMATS[suffix]


def encode(image: Image.Image, fmt: str, options: Mapping[str, Any],
           params: Mapping[str, Any] | None = None) -> bytes:
    """Encoded bytes; for PNG the parameters go in a tEXt chunk as JSON, so a result says
    how it was made."""
    options = dict(options)
    if params is not None and fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text(METADATA_KEY, json.dumps(params, sort_keys=True))
        options["pnginfo"] = info
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def save_image(image: Image.Image, path: str | os.PathLike[str],
               params: Mapping[str, Any] | None = None) -> None:
    """Write atomically: a reader never sees half a file, a crash leaves no partial one."""
    fmt, options = output_format(path)
    data = encode(image, fmt, options, params)
    atomic_write(Path(path), data)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The parameters stored by `save_image` in a PNG, or None."""
    with Image.open(path) as image:
        text = getattr(image, "text", {}).get(METADATA_KEY)
    return None if text is None else json.loads(text)
