"""Colour preservation (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style
Transfer"), on PIL images before and after the render, so the optimisation itself is
unchanged.

- luminance: transfer on luminance images only (the style's luminance first matched to the
  content's mean and spread), then put the content's chroma back (YIQ).
- histogram: recolour the style images so their colour mean and covariance are the
  content's, then transfer as usual.
"""

from __future__ import annotations

import torch
from PIL import Image

_RGB_TO_YIQ = torch.tensor([
    [0.299, 0.587, 0.114],
    [0.595716, -0.274453, -0.321263],
    [0.211456, -0.522591, 0.311135],
])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _pixels(image: Image.Image) -> torch.Tensor:
    """(N, 3) float RGB, 0..255."""
    data = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
    return data.view(-1, 3).double()


def _image(pixels: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    data = pixels.round().clamp(0, 255).to(torch.uint8).view(size[1], size[0], 3)
    return Image.fromarray(data.numpy(), "RGB")


def _sample(image: Image.Image, max_pixels: int = 1 << 20) -> Image.Image:
    """A smaller copy for colour statistics: a megapixel estimates a mean and a 3x3
    covariance as well as fifty do, at a fiftieth of the memory."""
    if image.width * image.height <= max_pixels:
        return image
    ratio = (max_pixels / (image.width * image.height)) ** 0.5
    return image.resize((max(1, round(image.width * ratio)), max(1, round(image.height * ratio))),
                        Image.Resampling.BILINEAR)


def to_luminance(image: Image.Image, like: Image.Image | None = None) -> Image.Image:
    """Grey RGB image of the luminance; with `like`, shifted and scaled to its mean and std."""
    y = _pixels(image) @ _RGB_TO_YIQ[0].double()
    if like is not None:
        ref = _pixels(_sample(like)) @ _RGB_TO_YIQ[0].double()
        y = (y - y.mean()) / y.std().clamp_min(1e-6) * ref.std() + ref.mean()
    return _image(y[:, None].expand(-1, 3), image.size)


def recombine_luminance(luminance: Image.Image, chroma: Image.Image) -> Image.Image:
    """Luminance (Y) of the first image with the chroma (I, Q) of the second, same size."""
    y = (_pixels(luminance) @ _RGB_TO_YIQ.double().T)[:, :1]
    iq = (_pixels(chroma.resize(luminance.size, Image.Resampling.BICUBIC))
          @ _RGB_TO_YIQ.double().T)[:, 1:]
    return _image(torch.cat([y, iq], 1) @ _YIQ_TO_RGB.double().T, luminance.size)


def _sqrtm(matrix: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    values = values.clamp_min(1e-6).sqrt()
    return (vectors * (1 / values if inverse else values)) @ vectors.T


def match_color(image: Image.Image, like: Image.Image) -> Image.Image:
    """Affine recolouring of `image` to the colour mean and covariance of `like`.

    Uses symmetric matrix square roots (the "image analogies" variant), which of the
    affine maps that match the moments rotates colours least.
    """
    source, target = _pixels(_sample(image)), _pixels(_sample(like))
    mu_s, mu_t = source.mean(0), target.mean(0)
    cov_s = torch.cov(source.T) + 1e-3 * torch.eye(3, dtype=source.dtype)
    cov_t = torch.cov(target.T) + 1e-3 * torch.eye(3, dtype=source.dtype)
    transform = _sqrtm(cov_t) @ _sqrtm(cov_s, inverse=True)
    return _image((_pixels(image) - mu_s) @ transform.T + mu_t, image.size)
