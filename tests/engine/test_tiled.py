"""The tiled objective gives the whole-image objective's loss and gradient, and a tiled
render the untiled render's picture: on sizes that do not divide into tiles."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from shared.spec import RenderParams, plan_scales, with_size_defaults
from tests.engine.patterns import checkerboard, noise, scene, stripes
from worker.engine import render as engine
from worker.engine import tiled
from worker.engine.checkpoint import Checkpoint
from worker.engine.images import to_tensor
from worker.engine.render import RenderSpec, render
from worker.engine.vgg import LAYERS, load_vgg

DEVICE = torch.device("cpu")


def _objectives(params: RenderParams, content: Image.Image, styles: list[Image.Image],
                tile: int) -> tuple[engine.Callable, engine.Callable]:
    """The whole-image and the tiled objective of one job's top scale."""
    params = with_size_defaults(params, *content.size)
    spec = RenderSpec(content, styles, params)
    content_c, styles_c, _ = engine._colour_inputs(spec)
    scale = plan_scales(params, *content.size)[-1]
    weights = engine.style_layer_weights(params)
    layers = frozenset(weights) | frozenset(engine.content_layer_weights(params))
    model = load_vgg(params.pooling, "cpu", max(layers, key=LAYERS.index))
    targets = engine._style_targets(model, params, scale, max(scale.width, scale.height),
                                    styles_c, None, weights, DEVICE, None)
    blend = engine.style_blend(params.style_weights, len(styles))
    made = [engine._objective(model, params, scale, content_c, targets, blend, weights, DEVICE,
                              t) for t in (None, tile)]
    return made[0], made[1]


def test_reach_and_halo_of_vgg19() -> None:
    model = load_vgg("max", "cpu", "relu5_1")
    assert tiled.network_reach(model, "relu5_1") == 70
    assert tiled.halo(model, "relu5_1") == 80
    assert tiled.network_reach(model, "relu1_1") == 1


def test_tiles_own_every_position_once() -> None:
    """Owned positions of every layer cover each layer's map exactly once."""
    height, width = 136, 200
    for stride in (1, 2, 4, 8, 16):
        size = tiled.feature_size(height, width, stride)
        seen = torch.zeros(size, dtype=torch.int64)
        for t in tiled.tiles(height, width, 64, 80):
            tiled.Tile.place(t, seen, stride).add_(1)
        assert torch.equal(seen, torch.ones_like(seen)), stride


@pytest.mark.parametrize("case", [
    {"style_loss": "gram"},
    {"style_loss": "wasserstein"},
    {"style_loss": "gram", "pooling": "avg", "tv_weight": 10.0},
    {"style_loss": "wasserstein", "pooling": "avg", "preserve_color": "luminance"},
    {"style_loss": "gram", "preserve_color": "histogram", "two": True},
    {"style_loss": "wasserstein", "preserve_color": "none", "two": True, "tv_weight": 5.0},
    {"style_loss": "gram", "preserve_color": "luminance", "two": True},
    {"style_loss": "gram", "content_layer_weights": {"relu4_2": 1.0, "relu5_1": 0.3}},
    {"style_loss": "wasserstein", "content_layer_weights": {"relu3_1": 0.5, "relu5_1": 2.0},
     "content_weight": 3.0, "anchor_below": 0.0},
    {"style_loss": "gram", "content_layer_weights": {"relu4_2": 1.0, "relu5_1": 1.0},
     "anchor_below": 1.5},
])
def test_tiled_gradient_equals_untiled(case: dict) -> None:
    case = dict(case)
    styles = [stripes(96, 80)] + ([checkerboard(80, 96)] if case.pop("two", False) else [])
    params = RenderParams.from_dict({"width": 200, "height": 136, "min_size": 200,
                                     "iterations": [1], **case})
    whole, by_tiles = _objectives(params, scene(200, 136), styles, 64)
    x = to_tensor(noise(200, 136, seed=3))
    loss, grad = whole(x.clone())
    tiled_loss, tiled_grad = by_tiles(x.clone())
    scale = float(grad.abs().max())
    assert scale > 0
    assert float((tiled_grad - grad).abs().max()) <= 1e-4 * scale
    assert float(tiled_loss) == pytest.approx(float(loss), rel=1e-5)


def test_tiled_copy_term_equals_untiled() -> None:
    """With the painting itself as the picture, the copy term counts at nearly every
    relu5_1 position; summed tile by tile it gives the whole image's loss and gradient."""
    picture = noise(200, 136, seed=3)
    params = RenderParams.from_dict({"width": 200, "height": 136, "min_size": 200,
                                     "iterations": [1], "copy_weight": 30.0})
    without = replace(params, copy_weight=0.0)
    x = to_tensor(picture)
    (loss, grad), (tiled_loss, tiled_grad) = (
        objective(x.clone()) for objective in _objectives(params, scene(200, 136), [picture], 64))
    plain, _ = _objectives(without, scene(200, 136), [picture], 64)
    assert float(loss) > float(plain(x.clone())[0]) + 1.0  # the term is there, and large
    assert float((tiled_grad - grad).abs().max()) <= 1e-4 * float(grad.abs().max())
    assert float(tiled_loss) == pytest.approx(float(loss), rel=1e-5)


def test_one_tile_holding_the_whole_image_runs_one_pass() -> None:
    """A tile at least the image's size takes the untiled path: one forward and backward
    per evaluation, not a statistics pass plus a gradient pass (64 px tiles: both)."""
    params = RenderParams.from_dict({"width": 136, "height": 96, "min_size": 136,
                                     "iterations": [1]})
    x = to_tensor(noise(136, 96, seed=3))
    passes: list[int] = []
    model = load_vgg(params.pooling, "cpu", "relu5_1")
    hook = model.register_forward_pre_hook(lambda *_: passes.append(1))
    try:
        for tile, expected in ((144, 1), (64, None)):
            _, by_tiles = _objectives(params, scene(136, 96), [stripes(96, 96)], tile)
            passes.clear()
            by_tiles(x.clone())
            assert (len(passes) == expected) if expected else len(passes) > 2, (tile, passes)
    finally:
        hook.remove()


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# Two scales (96x68, then 136x96), both split into 64 px tiles unevenly; few iterations,
# since a tiled render of an image this small costs several whole-image ones (every halo
# covers most of the image). The timeouts are hang guards for a loaded machine.
RENDER = {"width": 136, "height": 96, "min_size": 90, "scale_step": 1.42, "iterations": [2],
          "tv_weight": 1.0}


@pytest.fixture(scope="module", params=["lbfgs", "adam"])
def untiled(request: pytest.FixtureRequest) -> tuple[str, Image.Image]:
    """The untiled render both tests below compare with, made once per optimizer."""
    params = RenderParams.from_dict({**RENDER, "optimizer": request.param})
    return request.param, render(RenderSpec(scene(136, 96), [stripes(96, 96)], params),
                                 device="cpu")


def _tiled(optimizer: str, **kwargs: object) -> Image.Image:
    params = RenderParams.from_dict({**RENDER, "optimizer": optimizer, "tile_size": 64})
    assert len(plan_scales(params, 136, 96)) == 2
    return render(RenderSpec(scene(136, 96), [stripes(96, 96)], params), device="cpu",
                  **kwargs)


@pytest.mark.timeout(1800)
def test_tiled_render_equals_untiled(untiled: tuple[str, Image.Image]) -> None:
    """8-bit outputs at most one level apart anywhere, for L-BFGS and Adam."""
    optimizer, expected = untiled
    assert np.abs(_pixels(_tiled(optimizer)) - _pixels(expected)).max() <= 1


@pytest.mark.timeout(1800)
def test_tiled_render_resumed_from_its_checkpoint_equals_untiled(
        untiled: tuple[str, Image.Image]) -> None:
    optimizer, expected = untiled
    checkpoints: list[Checkpoint] = []
    _tiled(optimizer, on_checkpoint=checkpoints.append)
    resumed = _tiled(optimizer, resume=checkpoints[0])
    assert np.abs(_pixels(resumed) - _pixels(expected)).max() <= 1


@pytest.mark.parametrize(("words", "expected"), [(["--tile-size", "auto"], None),
                                                 (["--tile-size", "256"], 256)])
def test_cli_tile_size(words: list[str], expected: int | None) -> None:
    import argparse

    from cli.render import add_param_options, params_from_args

    parser = argparse.ArgumentParser()
    add_param_options(parser)
    assert params_from_args(parser.parse_args(words)).tile_size == expected


@pytest.mark.parametrize("bad", [65, 48, 8208, "256"])
def test_tile_size_is_bounded_and_aligned(bad: object) -> None:
    from marshmallow import ValidationError

    with pytest.raises(ValidationError) as error:
        RenderParams.from_dict({"tile_size": bad})
    assert "tile_size" in error.value.messages
