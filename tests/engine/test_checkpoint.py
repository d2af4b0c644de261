"""Checkpoints between scales: a render resumed from one ends as if never interrupted."""

from __future__ import annotations

import io

import pytest
import torch

from shared.spec import RenderParams
from tests.engine.patterns import scene, stripes
from worker.engine.checkpoint import Checkpoint
from worker.engine.render import ProgressEvent, RenderSpec, render


def spec(optimizer: str) -> RenderSpec:
    params = RenderParams.from_dict({"size": 64, "min_size": 32, "iterations": [4],
                                     "optimizer": optimizer, "init": "noise", "seed": 3})
    return RenderSpec(scene(64, 48), [stripes(48, 48)], params)


def round_trip(checkpoint: Checkpoint) -> Checkpoint:
    """Through a file, as a second worker would get it (no pickled code)."""
    buffer = io.BytesIO()
    torch.save(checkpoint.to_dict(), buffer)
    buffer.seek(0)
    return Checkpoint.from_dict(torch.load(buffer, weights_only=True))


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_resuming_from_any_scale_gives_the_same_picture(optimizer: str) -> None:
    checkpoints: list[Checkpoint] = []
    whole = render(spec(optimizer), device="cpu", on_checkpoint=checkpoints.append)
    assert [c.scale for c in checkpoints] == [0, 1]  # after each scale but the last (of 3)
    assert (checkpoints[0].adam is not None) == (optimizer == "adam")
    for checkpoint in checkpoints:
        events: list[ProgressEvent] = []
        resumed = render(spec(optimizer), device="cpu", resume=round_trip(checkpoint),
                         on_progress=events.append)
        assert resumed.tobytes() == whole.tobytes()
        assert {e.scale for e in events} == set(range(checkpoint.scale + 1, 3))  # no rework
        assert events[0].elapsed >= checkpoint.elapsed  # time counts over every attempt
        assert 0 < events[0].fraction < events[-1].fraction == 1.0


def test_a_checkpoint_of_another_plan_is_refused() -> None:
    checkpoints: list[Checkpoint] = []
    render(spec("lbfgs"), device="cpu", on_checkpoint=checkpoints.append)
    other = RenderSpec(scene(64, 48), [stripes(48, 48)], RenderParams.from_dict(
        {"size": 96, "min_size": 32, "iterations": [4]}))
    with pytest.raises(ValueError, match="checkpoint"):
        render(other, device="cpu", resume=checkpoints[0])
