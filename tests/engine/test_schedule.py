"""The coarse-to-fine plan that shared.spec derives from the parameters."""

from __future__ import annotations

import itertools
import math

import pytest

from shared.spec import RenderParams, default_iterations, output_size, plan_scales


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
