"""Picture quality: what the defaults, the style-scale rule, the padding, the L-BFGS
safeguards and the copying meter each claim, checked on tiny images with the real VGG-19."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from shared.spec import (
    COPY_THRESHOLD,
    COPY_WEIGHT,
    DEFAULT_CONTENT_LAYER_WEIGHTS,
    MAX_STYLE_SIDE,
    SMALL_LAYER_WEIGHTS,
    STYLE_LAYERS,
    RenderParams,
    plan_scales,
    style_long_sides,
    with_size_defaults,
)
from tests.engine.patterns import checkerboard, noise, scene, stripes
from worker.engine import losses, quality
from worker.engine import render as render_module
from worker.engine.images import to_tensor
from worker.engine.optimize import FIRST_STEP, LBFGS, MAX_STEP
from worker.engine.render import RenderSpec, render, scale_layer_weights, style_layer_weights
from worker.engine.vgg import load_vgg


def _render(content: Image.Image, style: Image.Image, **params: object) -> Image.Image:
    return render(RenderSpec(content, [style], RenderParams.from_dict(params)), device="cpu")


# ------------------------------------------------------------------- layer weights


def test_default_layer_weights_fall_with_depth_and_sum_to_one() -> None:
    """Unsized params count the weights from 512 px up (relu4_1 level with relu3_1); a
    small output's fall strictly with depth."""
    for own, fall in ((None, lambda a, b: a >= b), (SMALL_LAYER_WEIGHTS, lambda a, b: a > b)):
        weights = style_layer_weights(RenderParams(style_layer_weights=own))
        assert list(weights) == list(STYLE_LAYERS)
        assert sum(weights.values()) == pytest.approx(1.0)
        ordered = [weights[k] for k in STYLE_LAYERS]
        assert all(fall(a, b) for a, b in itertools.pairwise(ordered))
        assert ordered[0] > ordered[-1]


def test_a_relu5_1_content_term_keeps_the_contents_deep_features() -> None:
    """content_layer_weights adds relu5_1 to relu4_2's term: the render's relu5_1 map stays
    nearer the content's (where the painting's objects would show). Weights are the layers'
    times content_weight; params not yet sized count the large-output default's layers."""
    assert render_module.content_layer_weights(RenderParams()) == DEFAULT_CONTENT_LAYER_WEIGHTS
    assert render_module.content_layer_weights(
        RenderParams(content_weight=2.0, content_layer_weights={"relu5_1": 0.5})) == {
            "relu5_1": 1.0}
    assert render_module.content_layer_weights(RenderParams(content_weight=0.0)) == {
        "relu4_2": 0.0}
    content, style = scene(96, 96), checkerboard(96, 96)
    common = {"size": 96, "min_size": 96, "iterations": [30], "style_weight": 300.0}
    without = _render(content, style, content_layer_weights={"relu4_2": 1.0}, **common)
    with_it = _render(content, style, content_layer_weights={"relu4_2": 1.0, "relu5_1": 2.0},
                      anchor_below=0.0, **common)
    model = load_vgg("max", "cpu", "relu5_1")

    def relu5_1_distance(image: Image.Image) -> float:
        with torch.no_grad():
            out, ref = (model(to_tensor(im), {"relu5_1"})["relu5_1"] for im in (image, content))
        return float(losses.content_loss(out, losses.content_target(ref)))

    assert relu5_1_distance(with_it) < 0.85 * relu5_1_distance(without)


def test_the_anchor_counts_only_the_photos_empty_positions() -> None:
    """With empty_below, a position counts where the photo's energy there is under that
    multiple of the map's mean: a change at a busy position costs nothing, one at an empty
    position costs what it costs without the mask (the norm stays the whole map's)."""
    photo = torch.zeros(1, 2, 1, 4)
    photo[..., 2:] = 3.0  # energies 0, 0, 18, 18; mean 9
    anchored, plain = losses.content_target(photo, 0.5), losses.content_target(photo)
    assert anchored.mask is not None and anchored.mask.flatten().tolist() == [1, 1, 0, 0]
    assert plain.mask is None and float(anchored.norm) == float(plain.norm)
    busy, empty = photo.clone(), photo.clone()
    busy[..., 3] += 5.0
    empty[..., 0] += 5.0
    assert float(losses.content_loss(busy, anchored)) == 0.0
    assert float(losses.content_loss(busy, plain)) > 0.0
    assert float(losses.content_loss(empty, anchored)) == float(losses.content_loss(empty, plain))
    assert render_module.content_anchors(RenderParams(size=512)) == {"relu5_1": 0.5}
    assert render_module.content_anchors(RenderParams(anchor_below=0.0)) == {}
    assert render_module.content_anchors(
        RenderParams(content_layer_weights={"relu4_2": 1.0})) == {}


def test_a_layer_weighted_zero_is_left_out() -> None:
    params = RenderParams(style_layer_weights={"relu1_1": 3.0, "relu2_1": 1.0, "relu5_1": 0.0})
    assert style_layer_weights(params) == {"relu1_1": 0.75, "relu2_1": 0.25}


def test_coarse_scales_weigh_layers_with_few_positions_per_channel_down() -> None:
    params = RenderParams(size=512)
    plan = plan_scales(params, 640, 480)
    base = style_layer_weights(params)
    first = scale_layer_weights(params, base, plan[0], len(plan))
    # 256x192: relu5_1 has 16x12 = 192 positions for 512 channels, 4 per channel wanted.
    assert (plan[0].width, plan[0].height) == (256, 192)
    assert first["relu5_1"] == pytest.approx(base["relu5_1"] * 192 / (4 * 512))
    assert first["relu4_1"] == pytest.approx(base["relu4_1"] * 768 / (4 * 512))
    assert first["relu3_1"] == base["relu3_1"] and first["relu1_1"] == base["relu1_1"]
    assert scale_layer_weights(params, base, plan[-1], len(plan)) == base
    off = RenderParams(size=512, min_positions_per_channel=0)
    assert scale_layer_weights(off, base, plan[0], len(plan)) == base


def test_last_scale_holds_back_only_a_layer_with_under_one_position_per_channel() -> None:
    """A 256 px output's last scale (256x192) gives relu5_1 192 positions for 512 channels:
    it weighs 192/512 of its share there; relu4_1 (768 positions) keeps all of it, and a
    512 px output's last scale keeps every weight (checked above)."""
    params = RenderParams(size=256)
    plan = plan_scales(params, 640, 480)
    base = style_layer_weights(params)
    last = scale_layer_weights(params, base, plan[-1], len(plan))
    assert (plan[-1].width, plan[-1].height) == (256, 192)
    assert last["relu5_1"] == pytest.approx(base["relu5_1"] * 192 / 512)
    assert {k: v for k, v in last.items() if k != "relu5_1"} == \
        {k: v for k, v in base.items() if k != "relu5_1"}


# ------------------------------------------------------------------ style scale rule


def test_style_size_follows_the_scale_and_the_documented_rule() -> None:
    base = RenderParams(size=1024)
    assert style_long_sides(base, 1024, 1024) == [1024]
    assert style_long_sides(base, 256, 1024) == [256]  # in proportion to the scale
    assert style_long_sides(RenderParams(style_scale=2.0), 256, 1024) == [512]
    # style_size fixes the final size in the style's pixels, and scales with it
    absolute = RenderParams(style_size=600, style_scale=3.0)
    assert style_long_sides(absolute, 3840, 3840) == [600]
    assert style_long_sides(absolute, 1920, 3840) == [300]
    # a mix averages several sizes; every size is capped
    assert style_long_sides(RenderParams(style_mix=(1.0, 0.5)), 400, 800) == [400, 200]
    assert style_long_sides(RenderParams(style_scale=8.0), 3840, 3840) == [MAX_STYLE_SIDE]


def _low_band_energy(image: Image.Image) -> float:
    """Share of the luminance's (mean-free) power spectrum at the lowest frequencies: grows
    when the picture's structure grows."""
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    power = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean()))) ** 2
    h, w = power.shape
    yy, xx = np.mgrid[0:h, 0:w]
    radius = np.hypot((yy - h // 2) / h, (xx - w // 2) / w)  # cycles per pixel
    return float(power[radius < 1 / 16].sum() / power.sum())


def test_a_larger_style_scale_gives_larger_strokes() -> None:
    """Stripes of period 8 px as the style; twice the style scale, twice the period: the
    picture's energy moves to lower spatial frequencies."""
    content = Image.new("RGB", (64, 64), (128, 128, 128))
    style = stripes(64, 64, period=8)
    common = {"size": 64, "min_size": 64, "iterations": [40], "style_weight": 1e3,
              "content_weight": 0.0}
    small = _render(content, style, style_scale=1.0, **common)
    large = _render(content, style, style_scale=2.0, **common)
    assert _low_band_energy(large) > 1.5 * _low_band_energy(small)


def test_style_mix_targets_are_the_average_of_each_size() -> None:
    """One size alone, and a mix of the same size twice, give the same picture."""
    content, style = scene(48, 40), checkerboard(48, 48)
    common = {"size": 48, "min_size": 48, "iterations": [3], "seed": 1}
    single = np.asarray(_render(content, style, **common))
    mixed = np.asarray(_render(content, style, style_mix=[1.0, 1.0], **common))
    other = np.asarray(_render(content, style, style_mix=[1.0, 0.5], **common))
    assert np.abs(single.astype(int) - mixed).max() <= 1
    assert np.abs(single.astype(int) - other).max() > 1


# ------------------------------------------------------------------------ padding


def test_no_light_or_dark_band_along_the_border() -> None:
    """Flat content, plain style: the outer 2 px columns and rows look like the middle.
    (With zero padding in the first convolution they come out a level darker: -0.8 / -1.0.)
    Every layer at full weight, as outputs from about 420 px up have them at the last scale:
    a 64 px output would hold relu3_1..relu5_1 back (scale_layer_weights), and the band
    then measures that, -0.6 levels, not the padding."""
    content = Image.new("RGB", (64, 48), (120, 120, 120))
    style = Image.new("RGB", (64, 64), (100, 120, 170))
    out = np.asarray(_render(content, style, size=64, min_size=64, iterations=[60],
                             style_weight=1000.0, content_weight=0.0,
                             min_positions_per_channel=0),
                     dtype=np.float64).mean(axis=2)
    interior = out[8:-8, 8:-8].mean()
    for band in (out[:, :2], out[:, -2:], out[:2, :], out[-2:, :]):
        assert abs(band.mean() - interior) < 0.5, (band.mean(), interior)


def test_the_style_images_own_border_never_reaches_its_statistics() -> None:
    """Two styles alike inside but one with a bright band down its left edge (a canvas
    edge in a scan) give the same targets; the band is inside render_module.STYLE_MARGIN."""
    plain = noise(200, 160, seed=3)
    banded = plain.copy()
    banded.paste((255, 255, 255), (0, 0, 3, 160))
    model = load_vgg("max", "cpu", "relu5_1")
    layers = frozenset(STYLE_LAYERS)
    assert render_module.STYLE_MARGIN * 200 >= 3
    same = [render_module._style_moments(model, style, [96], layers, torch.device("cpu"))
            for style in (plain, banded)]
    for layer in layers:
        assert torch.equal(same[0][layer].gram(), same[1][layer].gram()), layer
    unguarded = render_module.trim_margin(banded, 0.0)
    assert unguarded is banded and np.asarray(unguarded)[:, :3].min() == 255


# ------------------------------------------------------------------------ L-BFGS


def test_lbfgs_first_step_is_sized_in_pixel_levels() -> None:
    x = torch.zeros(1, 3, 8, 8)
    grad = torch.full_like(x, 1e-9)  # a loss's gradient can be tiny in pixel units
    LBFGS().step(x, grad)
    assert float(x.abs().max()) == pytest.approx(FIRST_STEP)


def test_lbfgs_skips_pairs_without_positive_curvature_and_caps_steps() -> None:
    optimizer = LBFGS(history_size=3)
    x = torch.zeros(1, 3, 4, 4)
    optimizer.step(x, torch.ones_like(x))
    optimizer.step(x, torch.full_like(x, 2.0))  # the gradient grew along -g: curvature < 0
    assert optimizer.state.count == 0
    assert float(x.abs().max()) == pytest.approx(FIRST_STEP * 3)  # 1 level, then 2
    optimizer.step(x, torch.full_like(x, 1e-3))  # curvature > 0: kept
    assert optimizer.state.count == 1
    before = x.clone()
    optimizer.step(x, torch.full_like(x, -1e6))  # a wild estimate is capped
    assert float((x - before).abs().max()) <= MAX_STEP + 1e-3


def test_lbfgs_converges_on_a_badly_scaled_quadratic_without_allocating_history() -> None:
    scales = torch.logspace(-3, 1, 48).view(1, 3, 4, 4)
    target = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 10
    x = torch.zeros(1, 3, 4, 4)
    optimizer = LBFGS(history_size=5)
    start = float((scales * (x - target) ** 2).sum())
    slots: list[int] = []
    for _ in range(60):
        optimizer.step(x, 2 * scales * (x - target))
        slots = slots if slots else [id(t) for t in optimizer.state.s]
        assert [id(t) for t in optimizer.state.s] == slots
    assert float((scales * (x - target) ** 2).sum()) < 1e-3 * start


# --------------------------------------------------------------------- copying meter


def _painting(width: int, height: int) -> Image.Image:
    """A 'painting' with objects: a disc and a bar on a gradient, a chequered panel, a
    striped panel."""
    pixels = np.asarray(scene(width, height)).copy()
    pixels[: height // 2, : width // 3] = np.asarray(checkerboard(width // 3, height // 2))
    pixels[height // 2:, 2 * width // 3:] = np.asarray(
        stripes(width - 2 * width // 3, height - height // 2, period=6, vertical=True))
    return Image.fromarray(pixels)


def test_copying_meter_separates_a_copied_picture_from_an_original_one() -> None:
    """Three quarters of the painting pasted over noise score high; a picture of other
    stripes, or noise, scores low."""
    style = _painting(128, 96)
    copied = np.asarray(noise(128, 96, seed=5)).copy()
    copied[:, 32:] = np.asarray(style)[:, :96]
    assert quality.copying(Image.fromarray(copied), style) > 0.3
    assert quality.copying(stripes(128, 96, period=10), style) < 0.1
    assert quality.copying(noise(128, 96, seed=7), style) < 0.05
    assert quality.copying(style, style) > 0.9


def test_the_copy_term_costs_only_near_duplicates_of_the_paintings_features() -> None:
    """A position counts from cosine COPY_THRESHOLD to its nearest style vector on, squared
    past it; one unlike every style vector costs nothing and gets no gradient; a step
    against the gradient moves a copy away."""
    units = torch.eye(4)[:3]  # the painting's vectors: e0, e1, e2
    features = torch.zeros(1, 4, 1, 3)
    features[0, :, 0, 0] = torch.tensor([2.0, 0.0, 0.0, 0.0])  # a copy of e0: cosine 1
    features[0, :, 0, 1] = torch.tensor([1.0, 0.0, 0.0, 1.0])  # cosine 0.707 to e0
    features[0, :, 0, 2] = torch.tensor([0.0, 0.0, 0.0, 5.0])  # like none of them
    copy = losses.CopyLoss(units, weight=30.0, threshold=COPY_THRESHOLD, positions=3)
    features.requires_grad_(True)
    loss = copy(features)
    expected = 30.0 * ((1 - COPY_THRESHOLD) ** 2 + (0.5**0.5 - COPY_THRESHOLD) ** 2) / 3
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    (grad,) = torch.autograd.grad(loss, features)
    assert float(grad[..., 2].abs().max()) == 0.0 and float(grad[..., 1].abs().max()) > 0
    assert float(copy(features.detach() - 0.1 * grad)) < float(loss)
    assert losses.unit_vectors(features.detach(), max_count=2).shape == (2, 4)  # every 2nd


def test_the_copy_term_keeps_a_render_from_keeping_the_painting() -> None:
    """Started from the painting itself, a render without the copy term keeps it (every
    relu5_1 position within the copying meter's similarity of the painting's), and one
    with it undoes nearly all of that; the term is off at copy_weight 0, where relu5_1 is
    not a style layer, and by default at 256 px and below."""
    style = _painting(96, 96)
    common = {"size": 96, "min_size": 96, "iterations": [25], "init": "image", "seed": 0}

    def rendered(**params: object) -> Image.Image:
        spec = RenderSpec(scene(96, 96), [style], RenderParams.from_dict({**common, **params}),
                          init_image=style)
        return render(spec, device="cpu")

    kept, undone = rendered(copy_weight=0.0), rendered(copy_weight=300.0)
    with torch.no_grad():
        painting = quality.features(style, 96)
        near = [quality.copied_fraction(quality.features(im, 96), painting)
                for im in (kept, undone)]
    assert near[0] > 0.9 and near[1] < 0.1, near
    assert not render_module._copies_checked(RenderParams(copy_weight=0.0), {"relu5_1": 1.0})
    assert not render_module._copies_checked(RenderParams(copy_weight=30.0), {"relu4_1": 1.0})
    sized = [with_size_defaults(RenderParams(size=side), side, side).copy_weight
             for side in (1024, 512, 384, 256, 128)]
    assert sized == [COPY_WEIGHT, COPY_WEIGHT, COPY_WEIGHT / 2, 0.0, 0.0]
