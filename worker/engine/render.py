"""One render: content + styles + parameters in, a PIL image out, coarse to fine.

Each scale of `shared.spec.plan_scales` optimises the image at that size, starting from
the previous scale's result upsampled, so the expensive full-size scale only has to add
detail to a picture whose composition is already settled.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Hashable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch.nn import functional as F

from shared import memory
from shared.spec import (
    COPY_LAYER,
    COPY_THRESHOLD,
    DEFAULT_LAYER_WEIGHTS,
    STYLE_LAYERS,
    RenderParams,
    Scale,
    content_anchors,
    content_layer_weights,
    output_size,
    plan_scales,
    style_long_sides,
    with_size_defaults,
)
from worker.engine import color, losses, tiled
from worker.engine.checkpoint import Checkpoint, CheckpointMismatch
from worker.engine.device import (
    activation_bytes,
    host_budget,
    memory_format,
    pick_device,
    prepare,
)
from worker.engine.device import memory_budget as memory_budget_of
from worker.engine.images import (
    BGR_MEAN,
    fit_long_side,
    resize,
    to_pil,
    to_tensor,
    trim_margin,
)
from worker.engine.optimize import LBFGS, Adam, AdamState, resize_adam_state
from worker.engine.vgg import LAYERS, VGG19, layer_shape, load_vgg

# At the last scale a layer needs only one position per channel to keep its full weight:
# every output from about 420 px up keeps all of them there (bench/gallery.py).
LAST_SCALE_PER_CHANNEL = 1.0
# Share of the style image's width and height left out along each border before its
# statistics: scans of paintings carry a bright canvas edge or a frame's shadow there
# (Matisse's Woman with a Hat: a 6 px light band on the left), and features that meet the
# zero padding at the style's border are matched best at the output's own border, so the
# band came back as a strip down the output's edge.
STYLE_MARGIN = 0.02


@dataclass
class RenderSpec:
    """Everything one render needs. Images are decoded PIL images (see images.open_image)."""

    content: Image.Image
    styles: Sequence[Image.Image]
    params: RenderParams = field(default_factory=RenderParams)
    init_image: Image.Image | None = None
    # Stable identities of the style images (their sha256, say). With them, `render` can
    # keep style targets in a `target_cache` that outlives one render: a batch that puts
    # one style on many contents computes that style's targets once per scale size.
    style_ids: Sequence[str] | None = None


@dataclass
class ProgressEvent:
    """Passed to `on_progress` after every iteration.

    `loss` and `preview()` are computed only when read: a caller that looks at them now and
    then costs the GPU nothing on the other iterations.
    """

    scale: int  # 0-based index of the current scale
    scales: int
    iteration: int  # iterations done in this scale, 1..iterations
    iterations: int
    width: int
    height: int
    elapsed: float  # seconds since render() began
    fraction: float  # of the whole render, scales weighted by pixels x iterations
    _loss: torch.Tensor = field(repr=False)
    _preview: Callable[[int], Image.Image] = field(repr=False)

    @property
    def loss(self) -> float:
        """The loss at the start of this iteration (reading it waits for the device)."""
        return float(self._loss)

    def preview(self, max_side: int = 256) -> Image.Image:
        """The current image, colours as the output will have them, at most max_side."""
        return self._preview(max_side)


class Cancelled(Exception):
    """Raised by render() when `on_progress` returned a truthy value; carries that event."""

    def __init__(self, event: ProgressEvent) -> None:
        super().__init__(f"cancelled at scale {event.scale + 1}/{event.scales}, "
                         f"iteration {event.iteration}/{event.iterations}")
        self.event = event


ProgressCallback = Callable[[ProgressEvent], Any]


def render(spec: RenderSpec, on_progress: ProgressCallback | None = None,
           device: str | torch.device | None = None,
           target_cache: MutableMapping[Hashable, StyleTargets] | None = None,
           on_checkpoint: Callable[[Checkpoint], Any] | None = None,
           resume: Checkpoint | None = None,
           memory_budget: int | None = None) -> Image.Image:
    """Render `spec`. `on_progress(event)` runs after every iteration; if it returns
    something truthy the render stops there and raises `Cancelled`. (An exception raised by
    the callback itself propagates unchanged, and stops the render just as promptly.)

    The callback costs nothing on the device unless it reads `event.loss` or calls
    `event.preview()`, so it may run on every iteration and throttle itself.

    `target_cache` (used only when `spec.style_ids` is given) keeps each style's targets
    across renders; the caller bounds its size.

    `on_checkpoint(checkpoint)` runs after each scale but the last; `resume=` one of them
    continues from there, on any device, to the same picture (bit for bit on the CPU)
    as a render that was never interrupted.

    The memory plan (shared/memory.py) picks each scale's tiling for `memory_budget` bytes
    (default: what the device has free, see device.memory_budget) before anything renders,
    and raises memory.DoesNotFit, naming the fix, for a job no tiling fits.
    """
    started = time.monotonic() - (resume.elapsed if resume is not None else 0.0)
    params = with_size_defaults(spec.params, *spec.content.size)
    dev = _device(device)
    prepare(dev)
    blend = style_blend(params.style_weights, len(spec.styles))
    content, styles, init_image = _colour_inputs(spec)
    finish = _finisher(params, spec.content)
    plan = plan_scales(params, *spec.content.size)
    final_side = max(plan[-1].width, plan[-1].height)
    layer_weights = style_layer_weights(params)
    layers = frozenset(layer_weights) | frozenset(content_layer_weights(params))
    layout = memory.job_layout(params, *spec.content.size,
                               memory_budget if memory_budget is not None
                               else memory_budget_of(dev),
                               activation_bytes(dev), dev.type,
                               host_budget(dev))
    model = load_vgg(params.pooling, str(dev), max(layers, key=LAYERS.index))
    generator = torch.Generator().manual_seed(
        params.seed if params.seed is not None else random.getrandbits(63))

    total_work = sum(s.width * s.height * s.iterations for s in plan)
    work_done = 0
    x: torch.Tensor | None = None
    adam_state: AdamState | None = None
    if resume is not None:
        _check_resume(resume, plan)
        resume = resume.to(dev)
        x, adam_state = resume.x, resume.adam
        work_done = sum(s.width * s.height * s.iterations for s in plan[:resume.scale + 1])
    for scale in plan[0 if resume is None else resume.scale + 1:]:
        place = layout[scale.index]
        # Where the image and the optimiser live: host memory when the plan puts them there
        # (a GPU short of memory for them), the network's device otherwise.
        home = torch.device("cpu") if place.image == "host" else dev
        style_targets = _style_targets(model, params, scale, final_side, styles,
                                       spec.style_ids, layer_weights, dev, target_cache,
                                       place.tile)
        objective = _objective(model, params, scale, content, style_targets, blend,
                               scale_layer_weights(params, layer_weights, scale, len(plan)),
                               home, place.tile, always_tiled=place.image == "host")
        x = _start(x, scale, params, content, init_image, generator, home)
        optimizer = _optimizer(params, scale, adam_state, home,  # the history beside x
                               "device" if place.image == "host" else place.history)
        for it in range(scale.iterations):
            loss, grad = objective(x)
            optimizer.step(x, grad)
            if params.optimizer == "adam":
                _clamp_(x)
            if on_progress is not None:
                work = work_done + scale.width * scale.height * (it + 1)
                event = ProgressEvent(
                    scale.index, len(plan), it + 1, scale.iterations, scale.width, scale.height,
                    time.monotonic() - started, work / total_work, loss,
                    _previewer(optimizer.output(x), finish))
                if on_progress(event):
                    raise Cancelled(event)
        x = _clamp_(optimizer.output(x).clone())
        if isinstance(optimizer, Adam):
            adam_state = optimizer.state
        work_done += scale.width * scale.height * scale.iterations
        if on_checkpoint is not None and scale.index < len(plan) - 1:
            on_checkpoint(Checkpoint(scale.index, len(plan), x, adam_state,
                                     time.monotonic() - started).to(torch.device("cpu")))
    assert x is not None
    # A scale thinner than MIN_SIDE was rendered stretched to it (plan_scales): back to size.
    image, size = finish(x), output_size(params, *spec.content.size)
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def _check_resume(checkpoint: Checkpoint, plan: Sequence[Scale]) -> None:
    """A checkpoint fits only the plan it came from (same scales, same sizes)."""
    if checkpoint.scales != len(plan) or not 0 <= checkpoint.scale < len(plan) - 1:
        raise CheckpointMismatch(f"checkpoint after scale {checkpoint.scale} of "
                                 f"{checkpoint.scales} does not fit a plan of {len(plan)} scales")
    done = plan[checkpoint.scale]
    if tuple(checkpoint.x.shape[-2:]) != (done.height, done.width):
        raise CheckpointMismatch(f"checkpoint image is {tuple(checkpoint.x.shape[-2:])}, "
                                 f"scale {checkpoint.scale} is {(done.height, done.width)}")


# --------------------------------------------------------------------------- set-up


def _device(device: str | torch.device | None) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device is None:
        from shared.settings import get_settings

        device = get_settings().device
    return pick_device(device)


def style_blend(weights: Sequence[float] | None, n_styles: int) -> list[float]:
    """Blend weights summing to 1; equal when not given."""
    if n_styles < 1:
        raise ValueError("at least one style image is needed")
    if weights is None:
        return [1.0 / n_styles] * n_styles
    if len(weights) != n_styles:
        raise ValueError(f"style_weights: {len(weights)} weights for {n_styles} style images")
    total = sum(weights)
    if total <= 0:
        raise ValueError("style_weights: at least one weight must be positive")
    return [w / total for w in weights]


def style_layer_weights(params: RenderParams) -> dict[str, float]:
    """Non-zero layer weights normalised to sum 1, so style_weight alone sets the balance.
    Null (params not through with_size_defaults): the defaults from 512 px up."""
    own = params.style_layer_weights
    if own is None:
        own = DEFAULT_LAYER_WEIGHTS
    chosen = {k: v for k, v in own.items() if v > 0 and k in STYLE_LAYERS}
    total = sum(chosen.values())
    return {k: v / total for k, v in chosen.items()} if total > 0 else {}


def scale_layer_weights(params: RenderParams, layer_weights: dict[str, float], scale: Scale,
                        n_scales: int) -> dict[str, float]:
    """The layer weights at one scale: a layer with fewer than `params.min_positions_per_channel`
    positions per channel below the last scale, or fewer than LAST_SCALE_PER_CHANNEL at the
    last, weighs that much less.

    At a coarse scale relu5_1 has few positions for its 512 channels (192 at 256 px), and
    matching its statistics there means reproducing the painting's own features: the
    coarse scales set the composition, and a face or a star ring drawn there stays to the
    end. The last scale keeps the full weights where it can, because they put the painting's
    strokes back; only an output too small to give relu5_1 one position per channel (under
    about 420 px) is held back there too.
    """
    per_channel = params.min_positions_per_channel
    if per_channel <= 0:
        return layer_weights
    if scale.index == n_scales - 1:
        per_channel = min(per_channel, LAST_SCALE_PER_CHANNEL)
    weights = {}
    for name, weight in layer_weights.items():
        channels, stride = layer_shape(name)
        positions = (scale.width // stride) * (scale.height // stride)
        weights[name] = weight * min(1.0, positions / (per_channel * channels))
    return weights


def _colour_inputs(spec: RenderSpec) -> tuple[Image.Image, list[Image.Image], Image.Image | None]:
    mode = spec.params.preserve_color
    if mode == "luminance":
        return (color.to_luminance(spec.content),
                [color.to_luminance(s, like=spec.content) for s in spec.styles],
                None if spec.init_image is None else color.to_luminance(spec.init_image))
    if mode == "histogram":
        styles = [color.match_color(s, spec.content) for s in spec.styles]
        return spec.content, styles, spec.init_image
    return spec.content, list(spec.styles), spec.init_image


def _finisher(params: RenderParams, content: Image.Image) -> Callable[[torch.Tensor], Image.Image]:
    if params.preserve_color == "luminance":
        return lambda x: color.recombine_luminance(to_pil(x), content)
    return to_pil


def _previewer(x: torch.Tensor, finish: Callable[[torch.Tensor], Image.Image]
               ) -> Callable[[int], Image.Image]:
    def preview(max_side: int) -> Image.Image:
        height, width = x.shape[-2:]
        if max(width, height) > max_side:
            width, height = fit_long_side(width, height, max_side)
            return finish(F.interpolate(x, size=(height, width), mode="area"))
        return finish(x)

    return preview


# ------------------------------------------------------------------------ per scale


# layer name -> losses.GramTarget or losses.GaussianTarget; COPY_UNITS -> the style's unit
# COPY_LAYER vectors (losses.unit_vectors) when the render checks for copies.
StyleTargets = dict[str, Any]
COPY_UNITS = "copy_units"


def _style_targets(model: VGG19, params: RenderParams, scale: Scale, final_side: int,
                   styles: Sequence[Image.Image], style_ids: Sequence[str] | None,
                   layer_weights: dict[str, float], device: torch.device,
                   cache: MutableMapping[Hashable, StyleTargets] | None,
                   tile: int | None = None) -> list[StyleTargets]:
    """Each style's targets at this scale: from the cache when an earlier render made them.

    Colour preservation rewrites the styles against the content, so those targets belong to
    one content and are not cached.
    """
    make_target = losses.gram_target if params.style_loss == "gram" else losses.gaussian_target
    sides = style_long_sides(params, max(scale.width, scale.height), final_side)
    cacheable = cache is not None and style_ids is not None and params.preserve_color == "none"
    targets = []
    for index, style in enumerate(styles):
        key = ((style_ids[index], tuple(sides), params.style_loss, params.pooling,
                tuple(sorted(layer_weights)), _copies_checked(params, layer_weights), str(device))
               if cacheable else None)
        found = cache.get(key) if cache is not None and key is not None else None
        if found is None:
            stats = _style_moments(model, style, sides, frozenset(layer_weights), device, tile)
            found = {k: make_target(m) for k, m in stats.items()}
            if _copies_checked(params, layer_weights):
                found[COPY_UNITS] = _style_units(model, style, sides, device, tile)
            if cache is not None and key is not None:
                cache[key] = found
        targets.append(found)
    return targets


def _style_moments(model: VGG19, style: Image.Image, sides: Sequence[int],
                   layers: frozenset[str], device: torch.device, tile: int | None = None
                   ) -> dict[str, losses.Moments]:
    """Per-position moments of the style at each size, averaged with equal weight.

    Averaging per-position statistics (not raw sums) gives each size an equal say however
    many positions it has; the result is the statistics of an equal mixture of the sizes,
    as the moments of one position.
    """
    per_size: list[dict[str, losses.Moments]] = []
    inner = trim_margin(style, STYLE_MARGIN)
    with torch.no_grad():
        for side in sides:
            style_x = to_tensor(resize(inner, fit_long_side(*inner.size, side)), device)
            if (size_tile := tiled.needed(tile, *style_x.shape[-2:])) is not None:
                per_size.append(tiled.moments(model, style_x, layers, size_tile))
            else:
                per_size.append({k: losses.moments(f) for k, f in model(style_x, layers).items()})
    return {k: losses.Moments(1, sum(m[k].mean() for m in per_size) / len(sides),
                              sum(m[k].gram() for m in per_size) / len(sides))
            for k in per_size[0]}


def _copies_checked(params: RenderParams, layer_weights: Mapping[str, float]) -> bool:
    """The copy term needs COPY_LAYER, which the network then computes anyway."""
    return bool(params.copy_weight) and COPY_LAYER in layer_weights


def _style_units(model: VGG19, style: Image.Image, sides: Sequence[int],
                 device: torch.device, tile: int | None = None) -> torch.Tensor:
    """The style's COPY_LAYER vectors at each of its sizes, as unit vectors: what a copied
    object in the picture would nearly repeat."""
    inner = trim_margin(style, STYLE_MARGIN)
    units = []
    with torch.no_grad():
        for side in sides:
            style_x = to_tensor(resize(inner, fit_long_side(*inner.size, side)), device)
            size_tile = tiled.needed(tile, *style_x.shape[-2:])
            features = (model(style_x, {COPY_LAYER})[COPY_LAYER] if size_tile is None
                        else tiled.feature_map(model, style_x, COPY_LAYER, size_tile))
            units.append(losses.unit_vectors(features,
                                             losses.MAX_COPY_VECTORS // len(sides)))
    return torch.cat(units)


def _copy_loss(params: RenderParams, scale: Scale, style_targets: Sequence[StyleTargets]
               ) -> losses.CopyLoss | None:
    """The copy term of this scale, over every style's vectors (a copy of any one counts)."""
    units = [targets[COPY_UNITS] for targets in style_targets if COPY_UNITS in targets]
    if not units:
        return None
    rows, cols = tiled.feature_size(scale.height, scale.width, layer_shape(COPY_LAYER)[1])
    assert params.copy_weight is not None, "params come through with_size_defaults"
    return losses.CopyLoss(torch.cat(units), params.copy_weight, COPY_THRESHOLD, rows * cols)


def _objective(model: VGG19, params: RenderParams, scale: Scale, content: Image.Image,
               style_targets: Sequence[StyleTargets], blend: Sequence[float],
               layer_weights: dict[str, float], device: torch.device, tile: int | None = None,
               always_tiled: bool = False
               ) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The loss at this scale as a function of the image on `device`, its content target
    computed once.

    With `tile`, the same loss and gradient computed tile by tile (tiled.py), in memory
    bounded by the tile; without, in one pass over the whole image (the faster way, when
    it fits), also where `tile` covers the image, unless `always_tiled`: an image away
    from the network's device (in host memory) must go through it in crops.
    """
    style_distance = losses.gram_loss if params.style_loss == "gram" else losses.wasserstein_loss
    assert params.style_weight is not None, "params come through with_size_defaults"
    style_loss = losses.StyleLoss(style_distance, style_targets, blend, layer_weights,
                                  params.style_weight)
    content_weights = content_layer_weights(params)
    anchors = content_anchors(params)
    copy_loss = _copy_loss(params, scale, style_targets)
    content_x = to_tensor(resize(content, (scale.width, scale.height)), device)
    if not always_tiled:
        tile = tiled.needed(tile, scale.height, scale.width)
    if tile is not None:
        return tiled.objective(model, style_loss, content_x, content_weights,
                               params.tv_weight, tile, anchors=anchors, copy=copy_loss)
    with torch.no_grad():
        maps = model(content_x, frozenset(content_weights))
    content_loss = losses.ContentLoss(
        {k: losses.content_target(f, anchors.get(k, 0.0)) for k, f in maps.items()},
        content_weights)
    layers = frozenset(layer_weights) | frozenset(content_weights)
    if copy_loss is not None:
        layers |= {COPY_LAYER}

    def objective(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x.requires_grad_(True)
        features = model(x, layers)
        loss = content_loss(features)
        loss = loss + style_loss({k: losses.moments(features[k]) for k in layer_weights})
        if copy_loss is not None:
            loss = loss + copy_loss(features[COPY_LAYER])
        if params.tv_weight:
            loss = loss + params.tv_weight * losses.tv_loss(x)
        (grad,) = torch.autograd.grad(loss, x)
        x.requires_grad_(False)
        return loss.detach(), grad

    return objective


def _start(previous: torch.Tensor | None, scale: Scale, params: RenderParams,
           content: Image.Image, init_image: Image.Image | None,
           generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """The image a scale starts from: the last scale's upsampled, or the chosen init."""
    size = (scale.width, scale.height)
    if previous is not None:
        x = F.interpolate(previous.to(device), size=(scale.height, scale.width), mode="bicubic",
                          align_corners=False)
    elif params.init == "content":
        x = to_tensor(resize(content, size), device)
    elif params.init == "image":
        if init_image is None:
            raise ValueError("init: 'image' needs an init image")
        x = to_tensor(resize(init_image, size), device)
    else:
        # Mid-grey plus noise, made on the CPU so a seed gives the same start on any device.
        noise = torch.randn((1, 3, scale.height, scale.width), generator=generator) * 48 + 128
        x = (noise - torch.tensor(BGR_MEAN).view(1, 3, 1, 1)).to(device)
    return _clamp_(x.contiguous(memory_format=memory_format(device)))


def _optimizer(params: RenderParams, scale: Scale, adam_state: AdamState | None,
               device: torch.device, history: str = "device") -> LBFGS | Adam:
    if params.optimizer == "lbfgs":
        # The memory plan's "host": the history in (pinned) host memory, streamed in.
        return LBFGS(history_size=params.lbfgs_history,
                     history_device=torch.device("cpu") if history == "host" else None)
    size = (scale.height, scale.width)
    state = (None if adam_state is None
             else resize_adam_state(adam_state, size, memory_format(device), device))
    return Adam(lr=params.learning_rate, ema_decay=params.ema_decay, state=state)


def _clamp_(x: torch.Tensor) -> torch.Tensor:
    """Keep pixels displayable (0..255 before the mean is taken off)."""
    low, high = _pixel_bounds(x.device)
    torch.clamp(x.data, low, high, out=x.data)
    return x


@functools.lru_cache(maxsize=8)
def _pixel_bounds(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Made once per device: Adam clamps every iteration, and a fresh tensor would be a
    host-to-device copy each time."""
    mean = torch.tensor(BGR_MEAN, device=device).view(1, 3, 1, 1)
    return -mean, 255 - mean
