"""The whole image in host memory, only the tiles' crops on the device (issue 9 §2: a
render's device memory bounded by the tile, whatever the image's size): a plan that puts
it there only when nothing else fits, and a render that follows it to the same picture."""

from __future__ import annotations

import numpy as np
import pytest

from shared import memory
from shared.spec import MIN_TILE, RenderParams, plan_scales
from tests.engine.patterns import scene, stripes
from worker.engine import tiled
from worker.engine.render import RenderSpec, render

GIB = 2**30


def _top(params: RenderParams, width: int, height: int):
    scale = plan_scales(params, width, height)[-1]
    return scale, max(scale.width, scale.height)


def test_plan_puts_the_image_on_the_host_only_below_the_history_floor() -> None:
    params = RenderParams(size=7680)
    scale, side = _top(params, 7680, 4320)

    def peak(placement: str, tile: int | None = MIN_TILE) -> memory.Peak:
        return memory.scale_peak(params, scale, side, tile, 2, "cuda",
                                 placement != "device", placement == "image")

    whole = scale.width * scale.height * (
        memory.IMAGE * (memory.IMAGES + memory.optimizer_images(params))
        + memory.content_target_bytes(params))
    assert peak("image").host == whole == peak("device").state
    # On the device only the crop in flight: the same bytes at 512 px as at 8K.
    small, small_side = _top(RenderParams(size=512), 512, 288)
    assert peak("image").state == memory.scale_peak(
        RenderParams(size=512), small, small_side, MIN_TILE, 2, "cuda", True, True).state
    assert peak("image").total < peak("history").total < peak("device").total

    floor = peak("history").total
    assert memory.plan_scale(params, scale, side, floor, 2, "cuda").image == "device"
    plan = memory.plan_scale(params, scale, side, floor - 1, 2, "cuda")
    assert (plan.image, plan.history, plan.placement) == ("host", "host", "image")
    assert plan.tile is not None and plan.tile > MIN_TILE and plan.peak.total < floor
    assert plan.peak.host == whole
    # Adam has no history to move: it goes from the device straight to the image on host.
    adam = RenderParams(size=7680, optimizer="adam")
    adam_floor = memory.scale_peak(adam, scale, side, MIN_TILE, 2, "cuda").total
    assert memory.plan_scale(adam, scale, side, adam_floor - 1, 2, "cuda").image == "host"


def test_image_on_host_refused_when_the_host_cannot_hold_it_or_on_a_cpu() -> None:
    params = RenderParams(size=7680)
    scale, side = _top(params, 7680, 4320)
    image_floor = memory.scale_peak(params, scale, side, MIN_TILE, 2, "cuda", True, True)
    budget = memory.scale_peak(params, scale, side, MIN_TILE, 2, "cuda", True).total - 1
    with pytest.raises(memory.DoesNotFit):
        memory.plan_scale(params, scale, side, budget, 2, "cuda",
                          host_budget=image_floor.host - 1)
    assert memory.plan_scale(params, scale, side, budget, 2, "cuda",
                             host_budget=image_floor.host).image == "host"
    with pytest.raises(memory.DoesNotFit, match="image and optimizer state in host memory"):
        memory.plan_scale(params, scale, side, image_floor.total - 1, 2, "cuda")
    with pytest.raises(memory.DoesNotFit, match="lbfgs_history"):
        memory.plan_scale(params, scale, side, budget, 4, "cpu")
    # The farm's check at submit takes the same plan: a GPU worker with the host memory
    # runs a job its device alone could not.
    workers = [memory.WorkerMemory(budget, 2, "cuda", host_budget=image_floor.host)]
    assert memory.farm_problem(params, 7680, 4320, workers) is None


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_render_with_the_image_on_the_host_is_the_same_picture(
        monkeypatch: pytest.MonkeyPatch, optimizer: str) -> None:
    """A plan with the image on the host at the last scale is always tiled, even where one
    tile holds the image, and makes the untiled render's picture (8-bit, 1 level). On the
    CPU host and device are one: this checks the render's plumbing, a GPU the crossing."""
    params = RenderParams(size=64, min_size=45, iterations=(3, 4), optimizer=optimizer)
    spec = RenderSpec(scene(64, 48), [stripes(48, 48)], params)
    tiles: list[int] = []
    real_objective = tiled.objective

    def spy(*args: object, **kwargs: object) -> object:
        tiles.append(args[-1])  # type: ignore[arg-type]
        return real_objective(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tiled, "objective", spy)
    expected = np.asarray(render(spec, device="cpu")).astype(int)
    assert tiles == []

    real_layout = memory.job_layout

    def image_on_host_at_last(*args: object, **kwargs: object) -> list[memory.ScalePlan]:
        layout = real_layout(*args, **kwargs)  # type: ignore[arg-type]
        return [*layout[:-1], memory.ScalePlan(64, "host", layout[-1].peak, "host")]

    monkeypatch.setattr(memory, "job_layout", image_on_host_at_last)
    got = np.asarray(render(spec, device="cpu")).astype(int)
    assert tiles == [64]
    assert np.abs(got - expected).max() <= 1
