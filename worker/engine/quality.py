"""Measures of a finished render, for benchmarks and tests (not used while rendering).

Every image is evaluated at one size (long side 512 by default) with the Caffe VGG-19:

- style distance: mean over relu1_1..relu5_1 of ‖G(out) − G(style)‖² / ‖G(style)‖²;
- content distance: ‖F(out) − F(content)‖² / ‖F(content)‖² at relu4_2;
- copying: the fraction of the output's relu5_1 positions whose feature vector is nearly
  the same (cosine similarity above 0.7) as one at some position of the style image, with
  both images at long side 256 and again at 512; the larger of the two fractions.

The first two are what the optimiser minimises, so they cannot see a render that meets the
style statistics by reproducing the painting's objects (a face in the sky matches a portrait's
Gram matrices very well). relu5_1 sees objects, eyes and hats, not strokes; a painting's
strokes re-arranged over a new scene rarely come within 0.7 of any one of its relu5_1
vectors, while a copied face does at every position it covers. Two evaluation sizes,
because an object is copied at some size relative to the frame: a 256 px render's copied
hat is blurred away at 512, and found at 256.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from shared.spec import CONTENT_LAYER, COPY_LAYER, STYLE_LAYERS
from worker.engine import losses
from worker.engine.images import fit_long_side, resize, to_tensor
from worker.engine.vgg import load_vgg

EVAL_SIZE = 512
COPY_SIMILARITY = 0.7
COPY_SIZES = (256, 512)


@dataclass(frozen=True)
class Quality:
    style: float
    content: float
    copying: float


def features(image: Image.Image, size: int = EVAL_SIZE,
             device: str = "cpu") -> dict[str, torch.Tensor]:
    """Every layer the measures read, of `image` resized to long side `size`, in fp32."""
    model = load_vgg("max", device, "relu5_1")
    with torch.no_grad():
        x = to_tensor(resize(image, fit_long_side(*image.size, size)), device)
        return {k: f.float() for k, f in
                model(x, frozenset(STYLE_LAYERS) | {CONTENT_LAYER}).items()}


def style_distance(out: dict[str, torch.Tensor], style: dict[str, torch.Tensor]) -> float:
    return sum(float(losses.gram_loss(losses.moments(out[k]),
                                      losses.gram_target(losses.moments(style[k]))))
               for k in STYLE_LAYERS) / len(STYLE_LAYERS)


def content_distance(out: dict[str, torch.Tensor], content: dict[str, torch.Tensor]) -> float:
    return float(losses.content_loss(out[CONTENT_LAYER],
                                     losses.content_target(content[CONTENT_LAYER])))


def copying(out: Image.Image, style: Image.Image, threshold: float = COPY_SIMILARITY,
            device: str = "cpu") -> float:
    """The larger, over COPY_SIZES, fraction of copied relu5_1 positions."""
    return max(copied_fraction(features(out, size, device), features(style, size, device),
                               threshold)
               for size in COPY_SIZES)


def copied_fraction(out: dict[str, torch.Tensor], style: dict[str, torch.Tensor],
                    threshold: float = COPY_SIMILARITY) -> float:
    """Fraction of the output's relu5_1 positions with a near-duplicate in the style's."""
    a = _unit_vectors(out[COPY_LAYER])
    b = _unit_vectors(style[COPY_LAYER])
    nearest = (a @ b.T).amax(dim=1)
    return float((nearest > threshold).float().mean())


def _unit_vectors(feature_map: torch.Tensor) -> torch.Tensor:
    """(positions, C) rows of unit length; all-zero positions stay zero (similarity 0)."""
    flat = feature_map.float().flatten(2).squeeze(0).T
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-6)


def measure(out: Image.Image, content: Image.Image, style: Image.Image,
            size: int = EVAL_SIZE, device: str = "cpu") -> Quality:
    f_out, f_content, f_style = (features(im, size, device) for im in (out, content, style))
    return Quality(style_distance(f_out, f_style), content_distance(f_out, f_content),
                   copying(out, style, device=device))
