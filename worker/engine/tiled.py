"""The objective of one scale computed tile by tile: the same loss and gradient as the
whole-image objective in render.py, in memory bounded by the tile, not the image.

Why it is exact (up to float rounding), where tiling elsewhere matches the style per tile:
- Every tile is cut out with a halo as wide as the network's receptive reach, so the
  features at the positions it *owns* equal the whole image's features there. Tile origins
  and halos are multiples of the network's total stride, so the pooling grids line up.
- Each layer's positions are split among the tiles with no overlap (the tile grid scaled
  by the layer's stride), so statistics summed over owned positions are the whole image's.
- Style losses depend on the image only through moments (sums over positions). Pass 1 sums
  them over all tiles without grad; a small autograd on the C×C statistics gives the style
  loss and dL/d(moments). Pass 2 back-propagates, tile by tile, the surrogate
  ⟨dL/d(moments), the tile's own moments⟩, whose pixel gradient is the style loss's; the
  content and TV terms are plain sums over owned positions. Each tile's pixel gradient,
  halo included, is added into one gradient of the whole image.

The whole image may live in host memory while the network runs on a GPU (the memory
plan's "image" placement): only each crop goes to the device, and each crop's gradient
comes back, so the device holds one tile's work whatever the image's size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from shared.memory import tile_step
from shared.spec import COPY_LAYER, TILE_ALIGN, layer_shape
from worker.engine import losses
from worker.engine.device import memory_format
from worker.engine.vgg import VGG19

# Tile origins and halos are multiples of this: the total stride of VGG-19 up to relu5_1
# (four 2×2 poolings), so a crop's pooling windows are the whole image's.
ALIGN = TILE_ALIGN

# d loss / d (Σf, Σffᵀ) of one layer; None for a statistic the loss does not read.
MomentGrads = tuple[torch.Tensor | None, torch.Tensor | None]
Objective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def layer_strides(model: VGG19) -> dict[str, int]:
    """Each layer's stride in input pixels: 2 to the number of poolings before it."""
    strides, stride = {}, 1
    for name in model.names:
        if name.startswith("pool"):
            stride *= 2
        strides[name] = stride
    return strides


def network_reach(model: VGG19, last_layer: str) -> int:
    """How many input pixels beyond a feature's own stride×stride block can change it.

    A 3×3 convolution at stride s reaches s pixels further on each side; a 2×2 pooling
    reaches nothing beyond the block its output covers. 70 px up to relu5_1.
    """
    reach, stride = 0, 1
    for name in model.names[: model.names.index(last_layer) + 1]:
        if name.startswith("pool"):
            stride *= 2
        else:
            reach += stride
    return reach


def halo(model: VGG19, last_layer: str) -> int:
    """The reach rounded up to the alignment: 80 px up to relu5_1."""
    return math.ceil(network_reach(model, last_layer) / ALIGN) * ALIGN


@dataclass(frozen=True)
class Span:
    """One tile along one axis: the pixels it owns, [start, end), and its crop with halo."""

    start: int
    end: int
    crop_start: int
    crop_end: int
    length: int  # of the whole axis

    def positions(self, stride: int, size: int) -> slice:
        """Owned positions of a layer of this stride and `size`, in the whole image's map.

        Starts are multiples of ALIGN, so of every stride; the last tile owns the ceil-mode
        pooling's partial position at the image's edge too.
        """
        return slice(self.start // stride, size if self.end == self.length else self.end // stride)

    def owned(self, stride: int, size: int) -> slice:
        """The same positions in the crop's map."""
        whole, shift = self.positions(stride, size), self.crop_start // stride
        return slice(whole.start - shift, whole.stop - shift)

    @property
    def region(self) -> slice:
        """Owned pixels plus the next one where the axis has it (for TV), in crop coordinates."""
        return slice(self.start - self.crop_start,
                     min(self.end + 1, self.length) - self.crop_start)


def spans(length: int, tile: int, margin: int) -> list[Span]:
    """Split an axis into tiles of at most `tile` pixels (a multiple of ALIGN), as even as
    ALIGN allows, each cropped with `margin` more pixels on both sides where there are."""
    if tile % ALIGN or margin % ALIGN:
        raise ValueError(f"tile size and halo must be multiples of {ALIGN}")
    step = tile_step(length, tile)
    return [Span(start, min(start + step, length), max(0, start - margin),
                 min(length, start + step + margin), length)
            for start in range(0, length, step)]


@dataclass(frozen=True)
class Tile:
    rows: Span
    cols: Span

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.rows.crop_start:self.rows.crop_end,
                 self.cols.crop_start:self.cols.crop_end]

    def crop_to(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The crop on the network's device: a view where `x` is there already, else a
        copy in the device's layout."""
        crop = self.crop(x)
        return crop if crop.device == device else crop.to(
            device, memory_format=memory_format(device))

    def owned(self, features: torch.Tensor, stride: int, size: tuple[int, int]) -> torch.Tensor:
        """The positions of a crop's feature map (whole image's map: `size`) this tile owns."""
        return features[..., self.rows.owned(stride, size[0]), self.cols.owned(stride, size[1])]

    def place(self, whole: torch.Tensor, stride: int) -> torch.Tensor:
        """The positions this tile owns in a map of the whole image (a view)."""
        height, width = whole.shape[-2:]
        return whole[..., self.rows.positions(stride, height), self.cols.positions(stride, width)]


def tiles(height: int, width: int, tile: int, margin: int) -> list[Tile]:
    return [Tile(r, c) for r in spans(height, tile, margin) for c in spans(width, tile, margin)]


def needed(tile: int | None, height: int, width: int) -> int | None:
    """`tile`, or None where one tile would hold the whole image: the untiled pass gives
    the same result in one pass instead of two (a tiled 1024 px image in one 1024 px tile
    took 1.46x the untiled time per iteration, bench/memory.py)."""
    return tile if tile is not None and (height > tile or width > tile) else None


def feature_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """A layer's size for an image: ceil-mode pooling keeps partial windows."""
    return math.ceil(height / stride), math.ceil(width / stride)


def objective(model: VGG19, style: losses.StyleLoss, content_x: torch.Tensor,
              content_weights: Mapping[str, float], tv_weight: float, tile: int,
              anchors: Mapping[str, float] | None = None,
              copy: losses.CopyLoss | None = None) -> Objective:
    """The tiled counterpart of render._objective: `(loss, grad)` of an image the size of
    `content_x`, holding activations of one tile (plus halo) at a time. The image, its
    gradient and the content targets stay on `content_x`'s device, the network's crops on
    the model's. `content_weights`: each content layer's weight, content_weight included;
    `anchors`: the layers that count only the photo's empty positions (spec.content_anchors),
    found on the whole map, so every tile uses the same mask; `copy`: the copy term, a sum
    over COPY_LAYER's owned positions like the content term."""
    device = model_device(model)
    layers = frozenset(style.layer_weights) | frozenset(content_weights)
    if copy is not None:
        layers |= {COPY_LAYER}
    strides = layer_strides(model)
    height, width = content_x.shape[-2:]
    grid = grid_for(model, content_x, layers, tile)
    sizes = {k: feature_size(height, width, strides[k]) for k in layers}
    anchors = anchors or {}
    targets = {k: _content_target(model, content_x, grid, strides[k], sizes[k], k,
                                  anchors.get(k, 0.0))
               for k in content_weights}
    norms = {k: target.norm.to(device) for k, target in targets.items()}

    def owned(t: Tile, features: Mapping[str, torch.Tensor], k: str) -> torch.Tensor:
        return t.owned(features[k], strides[k], sizes[k])

    def evaluate(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        style_loss, style_grads = _style_pass(model, style, x, tile)
        grad = torch.zeros_like(x)
        loss = style_loss.detach()
        for t in grid:
            crop = t.crop_to(x, device).detach().requires_grad_(True)
            features = model(crop, layers)
            part = crop.new_zeros((), dtype=torch.float32)
            for k, (g_total, g_outer) in style_grads.items():
                m = losses.moments(owned(t, features, k))
                if g_total is not None:
                    part = part + (g_total * m.total).sum()
                if g_outer is not None:
                    part = part + (g_outer * m.outer).sum()
            content = losses.ContentLoss(
                {k: _tile_target(t, target, strides[k], norms[k], device)
                 for k, target in targets.items()},
                content_weights)
            local = content({k: owned(t, features, k) for k in content_weights})
            if copy is not None:
                local = local + copy(owned(t, features, COPY_LAYER))
            if tv_weight:
                local = local + tv_weight * losses.tv_part(
                    crop[..., t.rows.region, t.cols.region],
                    (t.rows.end - t.rows.start, t.cols.end - t.cols.start), (height, width))
            (tile_grad,) = torch.autograd.grad(part + local, crop)
            t.crop(grad).add_(tile_grad.to(grad.device))
            loss = loss + local.detach()
        return loss, grad

    return evaluate


def _tile_target(t: Tile, target: losses.ContentTarget, stride: int, norm: torch.Tensor,
                 device: torch.device) -> losses.ContentTarget:
    """A tile's owned part of a content target, with the whole image's norm and mask."""
    mask = None if target.mask is None else t.place(target.mask, stride).to(device)
    return losses.ContentTarget(t.place(target.features, stride).to(device), norm, mask)


def _content_target(model: VGG19, content_x: torch.Tensor, grid: list[Tile], stride: int,
                    size: tuple[int, int], layer: str, empty_below: float = 0.0
                    ) -> losses.ContentTarget:
    """A content layer's map of the whole image, assembled from the tiles' owned parts."""
    return losses.content_target(_assemble(model, content_x, grid, stride, size, layer),
                                 empty_below)


def feature_map(model: VGG19, x: torch.Tensor, layer: str, tile: int) -> torch.Tensor:
    """`layer`'s fp32 map of the whole image `x`, computed tile by tile (a style image too
    large for one pass)."""
    stride = layer_strides(model)[layer]
    size = feature_size(*x.shape[-2:], stride)
    return _assemble(model, x, grid_for(model, x, frozenset({layer}), tile), stride, size,
                     layer)


def _assemble(model: VGG19, x: torch.Tensor, grid: list[Tile], stride: int,
              size: tuple[int, int], layer: str) -> torch.Tensor:
    full = torch.empty((1, layer_shape(layer)[0], *size), dtype=torch.float32,
                       device=x.device)
    device = model_device(model)
    with torch.no_grad():
        for t in grid:
            features = model(t.crop_to(x, device), {layer})[layer]
            t.place(full, stride).copy_(t.owned(features, stride, size))
    return full


def moments(model: VGG19, x: torch.Tensor, layers: frozenset[str], tile: int
            ) -> dict[str, losses.Moments]:
    """Each layer's moments of the whole image `x`, summed tile by tile without grad: the
    statistics of a style image or of the image being optimised, in a tile's memory."""
    grid = grid_for(model, x, layers, tile)
    strides = layer_strides(model)
    height, width = x.shape[-2:]

    def owned(t: Tile, features: Mapping[str, torch.Tensor], k: str) -> torch.Tensor:
        return t.owned(features[k], strides[k], feature_size(height, width, strides[k]))

    device = model_device(model)
    sums: dict[str, losses.Moments] = {}
    with torch.no_grad():
        for t in grid:
            features = model(t.crop_to(x, device), layers)
            for k in layers:
                m = losses.moments(owned(t, features, k))
                sums[k] = m if k not in sums else sums[k] + m
    return sums


def model_device(model: VGG19) -> torch.device:
    return next(model.parameters()).device


def grid_for(model: VGG19, x: torch.Tensor, layers: frozenset[str], tile: int) -> list[Tile]:
    """The tiles of `x` for a forward pass up to the deepest of `layers`."""
    height, width = x.shape[-2:]
    return tiles(height, width, tile, halo(model, max(layers, key=model.names.index)))


def _style_pass(model: VGG19, style: losses.StyleLoss, x: torch.Tensor, tile: int
                ) -> tuple[torch.Tensor, dict[str, MomentGrads]]:
    """Pass 1: the whole image's moments, summed tile by tile without grad; then the style
    loss and its gradient with respect to each layer's (Σf, Σffᵀ)."""
    layers = frozenset(style.layer_weights)
    if not layers or not style.weight:
        return x.new_zeros((), dtype=torch.float32), {}
    sums = moments(model, x, layers, tile)
    leaves = {k: losses.Moments(m.count, m.total.requires_grad_(True),
                                m.outer.requires_grad_(True)) for k, m in sums.items()}
    with torch.enable_grad():
        loss = style(leaves)
        flat = [t for m in leaves.values() for t in (m.total, m.outer)]
        # Gram losses never read Σf: its gradient is None, and its surrogate term is skipped.
        grads = torch.autograd.grad(loss, flat, allow_unused=True)
    return loss, {k: (grads[2 * i], grads[2 * i + 1]) for i, k in enumerate(leaves)}
