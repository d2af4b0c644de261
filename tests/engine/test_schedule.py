"""The coarse-to-fine plan that shared.spec derives from the parameters."""

from __future__ import annotations

import itertools
import math

import pytest

from shared.spec import (
    DEFAULT_CONTENT_LAYER_WEIGHTS,
    DEFAULT_LAYER_WEIGHTS,
    SMALL_LAYER_WEIGHTS,
    RenderParams,
    default_iterations,
    output_size,
    plan_scales,
    with_size_defaults,
)


def test_scales_grow_by_sqrt2_from_min_size_to_target() -> None:
    plan = plan_scales(RenderParams(size=512, min_size=128), 1024, 768)
    sides = [max(s.width, s.height) for s in plan]
    assert sides == [128, 181, 256, 362, 512]
    for small, big in itertools.pairwise(sides):
        assert big / small == pytest.approx(math.sqrt(2), rel=0.01)
    assert all(abs(s.width / s.height - 4 / 3) < 0.02 for s in plan)


def test_no_scale_below_min_size_and_one_scale_when_target_is_small() -> None:
    plan = plan_scales(RenderParams(size=300, min_size=200), 400, 400)
    assert [s.width for s in plan] == [212, 300]
    single = plan_scales(RenderParams(size=100, min_size=256), 400, 400)
    assert [(s.width, s.height) for s in single] == [(100, 100)]


def test_default_first_scale_is_half_the_output_within_128_to_256() -> None:
    """The coarse pass that settles the composition: every output from 256 px up gets one,
    none starts below 128 px (too few relu5_1 positions) or above 256 px; a min_size given
    by the job is kept."""
    def first_side(size: int, **kw: int) -> int:
        return plan_scales(RenderParams(size=size, **kw), 1024, 768)[0].width

    assert [first_side(size) for size in (128, 256, 384, 512, 1024, 3840)] == \
        [128, 128, 192, 256, 256, 339]
    assert len(plan_scales(RenderParams(size=256), 1024, 768)) == 3
    assert len(plan_scales(RenderParams(size=200), 1024, 768)) == 2
    assert first_side(256, min_size=256) == 256


def test_small_outputs_get_more_style_and_last_scale_iterations_unless_set() -> None:
    """Under 512 px the defaults push harder (style weight 100 -> 200, last scale's
    iterations 30 -> 80, linearly down to 256 px); from 512 px up, and wherever the job sets
    a value, nothing changes."""
    def resolved(**kw: object) -> tuple[float | None, list[int]]:
        params = with_size_defaults(RenderParams(**kw), 1024, 768)
        return params.style_weight, [s.iterations for s in plan_scales(params, 1024, 768)]

    assert resolved(size=512) == (100.0, [120, 60, 30])
    assert resolved(size=1024)[0] == 100.0
    assert resolved(size=256) == (200.0, [120, 60, 80])
    assert resolved(size=384) == (150.0, [120, 60, 55])
    assert resolved(size=256, style_weight=100.0, iterations=(9, 5, 1)) == (100.0, [9, 5, 1])
    assert resolved(size=256, style_loss="wasserstein")[0] == 100.0  # W2: half, at any size
    assert resolved(size=1024, style_loss="wasserstein")[0] == 50.0
    assert resolved(size=1024, style_loss="wasserstein", style_weight=80.0)[0] == 80.0



def test_the_relu5_1_content_term_fades_out_below_512_px_unless_set() -> None:
    """From 512 px up the default content layers are relu4_2 and relu5_1; relu5_1 falls
    linearly to nothing at 256 px; a job's own layers, even relu4_2 alone, stay."""
    def layers(**kw: object) -> dict[str, float] | None:
        return with_size_defaults(RenderParams(**kw), 1024, 768).content_layer_weights

    full = DEFAULT_CONTENT_LAYER_WEIGHTS
    assert set(full) == {"relu4_2", "relu5_1"}
    assert layers(size=512) == layers(size=3840) == full
    assert layers(size=384) == {"relu4_2": pytest.approx((full["relu4_2"] + 1.0) / 2),
                                "relu5_1": pytest.approx(full["relu5_1"] / 2)}
    assert layers(size=256) == layers(size=128) == {"relu4_2": 1.0}
    assert layers(size=1024, content_layer_weights={"relu4_2": 1.0}) == {"relu4_2": 1.0}
    assert layers(size=256, style_weight=50.0, content_layer_weights={"relu5_1": 2.0}) == {
        "relu5_1": 2.0}
    assert RenderParams.from_dict({"content_layer_weights": None}).content_layer_weights is None


def test_deep_style_layers_weigh_more_from_512_px_and_fall_back_below_unless_set() -> None:
    """From 512 px up relu4_1 weighs as much as relu3_1 and relu5_1 1.5x its small weight
    (the anchor holds the copying they would bring); both fall linearly to the small
    weights at 256 px, those that keep a small output's coarse pass from copying; a job's
    own weights stay."""
    def weights(**kw: object) -> dict[str, float] | None:
        return with_size_defaults(RenderParams(**kw), 1024, 768).style_layer_weights

    assert weights(size=512) == weights(size=3840) == DEFAULT_LAYER_WEIGHTS
    assert DEFAULT_LAYER_WEIGHTS["relu4_1"] == DEFAULT_LAYER_WEIGHTS["relu3_1"]
    assert weights(size=256) == weights(size=128) == SMALL_LAYER_WEIGHTS
    assert SMALL_LAYER_WEIGHTS["relu4_1"] == SMALL_LAYER_WEIGHTS["relu3_1"] / 4
    assert weights(size=384)["relu4_1"] == pytest.approx(10.0)
    assert weights(size=384)["relu5_1"] == pytest.approx(
        (DEFAULT_LAYER_WEIGHTS["relu5_1"] + SMALL_LAYER_WEIGHTS["relu5_1"]) / 2)
    own = {"relu1_1": 1.0, "relu5_1": 3.0}
    assert weights(size=1024, style_layer_weights=own) == own
    assert RenderParams.from_dict({"style_layer_weights": None}).style_layer_weights is None

def test_default_iterations_favour_coarse_scales() -> None:
    plan = plan_scales(RenderParams(size=512, min_size=128), 512, 512)
    iterations = [s.iterations for s in plan]
    assert iterations == default_iterations(len(plan), "lbfgs")
    assert iterations[0] == max(iterations) and iterations[-1] == min(iterations)


def test_iteration_list_overrides_per_scale_and_single_value_applies_to_all() -> None:
    params = RenderParams.from_dict({"size": 256, "min_size": 128, "iterations": [7, 5, 3]})
    assert [s.iterations for s in plan_scales(params, 256, 128)] == [7, 5, 3]
    params = RenderParams.from_dict({"size": 256, "min_size": 128, "iterations": [4]})
    assert [s.iterations for s in plan_scales(params, 256, 128)] == [4, 4, 4]


def test_iteration_list_of_another_length_is_stretched_over_the_scales() -> None:
    params = RenderParams.from_dict({"size": 256, "min_size": 128, "iterations": [9, 1]})
    assert [s.iterations for s in plan_scales(params, 256, 128)] == [9, 5, 1]


def test_scales_too_thin_for_the_network_are_planned_at_16_px() -> None:
    plan = plan_scales(RenderParams(size=48, min_size=24), 1, 2000)
    assert [(s.width, s.height) for s in plan] == [(16, 24), (16, 34), (16, 48)]
    assert output_size(RenderParams(size=48), 1, 2000) == (1, 48)  # what the render returns


@pytest.mark.parametrize(("content", "params", "expected"), [
    ((640, 480), {"size": 101}, (101, 76)),
    ((480, 640), {"size": 77}, (58, 77)),
    ((100, 100), {"width": 63, "height": 41}, (63, 41)),
])
def test_output_size(content: tuple[int, int], params: dict, expected: tuple[int, int]) -> None:
    params = RenderParams.from_dict(params)
    assert output_size(params, *content) == expected
    assert (plan_scales(params, *content)[-1].width,
            plan_scales(params, *content)[-1].height) == expected
