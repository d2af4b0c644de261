"""The render loop on tiny images with the real VGG-19: what it promises, checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from shared.spec import STYLE_LAYERS, RenderParams
from tests.engine.patterns import checkerboard, chroma_mean, gradient, noise, scene, stripes
from worker.engine import losses
from worker.engine.images import to_tensor
from worker.engine.render import Cancelled, ProgressEvent, RenderSpec, render
from worker.engine.vgg import load_vgg


def _render(content: Image.Image, styles: list[Image.Image], events: list | None = None,
            **params: object) -> Image.Image:
    def record(event: ProgressEvent) -> None:
        if events is not None:
            events.append((event.scale, event.iteration, event.loss))

    return render(RenderSpec(content, styles, RenderParams.from_dict(params)),
                  on_progress=record, device="cpu")


def style_distance(image: Image.Image, style: Image.Image) -> float:
    """The bench's measure: mean normalised Gram distance over the style layers."""
    model = load_vgg("max", "cpu", "relu5_1")
    with torch.no_grad():
        out = model(to_tensor(image), frozenset(STYLE_LAYERS))
        ref = model(to_tensor(style.resize(image.size)), frozenset(STYLE_LAYERS))
    return sum(float(losses.gram_loss(losses.moments(out[k]),
                                      losses.gram_target(losses.moments(ref[k]))))
               for k in STYLE_LAYERS) / len(STYLE_LAYERS)


def test_loss_falls_at_every_scale() -> None:
    events: list = []
    _render(scene(96, 72), [stripes(96, 96)], events, size=96, min_size=48, iterations=[12])
    scales = sorted({scale for scale, _, _ in events})
    assert scales == [0, 1, 2]
    for scale in scales:
        curve = [loss for s, _, loss in events if s == scale]
        assert len(curve) == 12
        assert curve[-1] < 0.95 * curve[0], (scale, curve)


@pytest.mark.parametrize(("content_size", "params", "expected"), [
    ((80, 60), {"size": 65}, (65, 49)),
    ((60, 80), {"size": 47}, (35, 47)),
    ((64, 64), {"width": 53, "height": 37}, (53, 37)),
])
def test_output_has_exactly_the_requested_size(content_size: tuple[int, int], params: dict,
                                               expected: tuple[int, int]) -> None:
    out = _render(gradient(*content_size), [checkerboard(40, 40)], min_size=32, iterations=[2],
                  **params)
    assert out.size == expected
    assert out.mode == "RGB"


def test_seeded_run_repeats_bitwise_and_other_seed_differs() -> None:
    def run(seed: int) -> bytes:
        return _render(scene(48, 40), [stripes(48, 48)], size=48, min_size=32, iterations=[4],
                       init="noise", seed=seed).tobytes()

    first = run(7)
    assert run(7) == first
    assert run(8) != first


@pytest.mark.parametrize("mode", ["luminance", "histogram"])
def test_colour_preservation_keeps_the_contents_colours(mode: str) -> None:
    content = gradient(64, 64)  # warm
    style = stripes(64, 64, colors=((10, 60, 230), (20, 200, 190)))  # cold
    kwargs = {"size": 64, "min_size": 64, "iterations": [25], "style_weight": 20.0}
    plain = _render(content, [style], **kwargs)
    kept = _render(content, [style], preserve_color=mode, **kwargs)
    target = chroma_mean(content)
    plain_off = np.linalg.norm(chroma_mean(plain) - target)
    kept_off = np.linalg.norm(chroma_mean(kept) - target)
    assert plain_off > 10  # the style did pull the colours away...
    assert kept_off < 0.5 * plain_off  # ...and preservation holds them near the content's


def test_two_styles_blend_by_their_weights() -> None:
    content = scene(64, 64)
    style_a = stripes(64, 64, period=10)
    style_b = checkerboard(64, 64, cell=5)
    kwargs = {"size": 64, "min_size": 64, "iterations": [25], "style_weight": 20.0}
    toward_a = _render(content, [style_a, style_b], style_weights=[0.9, 0.1], **kwargs)
    toward_b = _render(content, [style_a, style_b], style_weights=[0.1, 0.9], **kwargs)
    assert style_distance(toward_a, style_a) < style_distance(toward_b, style_a)
    assert style_distance(toward_b, style_b) < style_distance(toward_a, style_b)


def test_stop_from_on_progress_ends_the_run_within_one_iteration() -> None:
    seen: list[tuple[int, int]] = []

    def stop_at_third(event: ProgressEvent) -> bool:
        seen.append((event.scale, event.iteration))
        return event.scale == 1 and event.iteration == 3

    spec = RenderSpec(scene(64, 48), [stripes(64, 64)],
                      RenderParams(size=64, min_size=32, iterations=(5,)))
    with pytest.raises(Cancelled) as info:
        render(spec, on_progress=stop_at_third, device="cpu")
    assert seen[-1] == (1, 3)
    assert len(seen) == 5 + 3
    assert info.value.event.iteration == 3
    assert info.value.event.preview(16).size == (16, 12)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
@pytest.mark.parametrize("style_loss", ["gram", "wasserstein"])
def test_both_optimizers_and_style_losses_reduce_the_loss(optimizer: str, style_loss: str) -> None:
    events: list = []
    _render(noise(56, 48, seed=3), [checkerboard(56, 56)], events, size=56, min_size=56,
            iterations=[15], optimizer=optimizer, style_loss=style_loss)
    losses_ = [loss for _, _, loss in events]
    assert all(np.isfinite(losses_))
    assert losses_[-1] < 0.9 * losses_[0]


def test_progress_events_count_up_to_the_whole_render() -> None:
    events: list[ProgressEvent] = []
    spec = RenderSpec(scene(64, 64), [stripes(64, 64)],
                      RenderParams(size=64, min_size=45, iterations=(3, 2), optimizer="adam"))
    out = render(spec, on_progress=events.append, device="cpu")
    assert [(e.scale, e.iteration, e.iterations) for e in events] == [
        (0, 1, 3), (0, 2, 3), (0, 3, 3), (1, 1, 2), (1, 2, 2)]
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert events[0].width == 45 and events[-1].width == 64
    assert all(e.elapsed >= 0 for e in events)
    assert events[-1].preview(32).size == (32, 32)
    assert events[-1].preview(256).size == out.size


def test_init_image_is_used_and_required() -> None:
    params = RenderParams(size=32, min_size=32, iterations=(1,), init="image")
    with pytest.raises(ValueError, match="init"):
        render(RenderSpec(gradient(32, 32), [stripes(32, 32)], params), device="cpu")
    out = render(RenderSpec(gradient(32, 32), [stripes(32, 32)], params,
                            init_image=checkerboard(32, 32)), device="cpu")
    # One small step from a checkerboard is still a checkerboard, not the gradient.
    assert np.asarray(out, dtype=float).std() > 40


def test_adam_moments_follow_the_image_to_the_next_scale() -> None:
    from worker.engine.optimize import AdamState, resize_adam_state

    state = AdamState(step=9, m=torch.full((1, 3, 8, 10), 2.0), v=torch.full((1, 3, 8, 10), 3.0),
                      ema=torch.zeros(1, 3, 8, 10))
    bigger = resize_adam_state(state, (16, 20))
    assert bigger.step == 9 and bigger.ema is None
    assert bigger.m is not None and bigger.v is not None
    # Four times the pixels: per-pixel gradients are a quarter, so m x 1/4 and v x 1/16.
    assert torch.allclose(bigger.m, torch.full((1, 3, 16, 20), 0.5))
    assert torch.allclose(bigger.v, torch.full((1, 3, 16, 20), 3.0 / 16))
