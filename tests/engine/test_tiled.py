"""The tiled objective gives the whole-image objective's loss and gradient, and a tiled
render the untiled render's picture: on sizes that do not divide into tiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from shared.spec import CONTENT_LAYER, RenderParams, plan_scales
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
    spec = RenderSpec(content, styles, params)
    content_c, styles_c, _ = engine._colour_inputs(spec)
    scale = plan_scales(params, *content.size)[-1]
    weights = engine.style_layer_weights(params)
    layers = frozenset(weights) | {CONTENT_LAYER}
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


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_tiled_render_equals_untiled(optimizer: str) -> None:
    """Two scales, a few iterations: 8-bit outputs at most one level apart anywhere; and a
    tiled render resumed from its own checkpoint gives the same picture too."""
    base = {"width": 168, "height": 120, "min_size": 120, "scale_step": 1.4,
            "iterations": [4], "optimizer": optimizer, "tv_weight": 1.0}
    content, styles = scene(168, 120), [stripes(96, 96)]
    untiled = render(RenderSpec(content, styles, RenderParams.from_dict(base)), device="cpu")
    checkpoints: list[Checkpoint] = []
    tiled_params = RenderParams.from_dict({**base, "tile_size": 64})
    by_tiles = render(RenderSpec(content, styles, tiled_params), device="cpu",
                      on_checkpoint=checkpoints.append)
    assert len(plan_scales(tiled_params, *content.size)) == 2
    resumed = render(RenderSpec(content, styles, tiled_params), device="cpu",
                     resume=checkpoints[0])
    for other in (by_tiles, resumed):
        assert np.abs(_pixels(other) - _pixels(untiled)).max() <= 1
