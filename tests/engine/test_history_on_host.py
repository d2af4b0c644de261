"""The L-BFGS history on another device than the image (issue 9 §2: optimizer state in host
memory): the same steps bit for bit, a memory plan that puts it there exactly when it must,
and a render that follows the plan."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared import memory
from shared.spec import MIN_TILE, RenderParams, plan_scales
from tests.engine.patterns import scene, stripes
from worker.engine import optimize
from worker.engine import render as engine
from worker.engine.render import RenderSpec, render

GIB = 2**30


def _run_lbfgs(history_device: torch.device | None, steps: int = 40) -> list[torch.Tensor]:
    """L-BFGS on a badly scaled quartic: the ring wraps (history 4) and some pairs fail
    the curvature test (the gradient's noise), so every branch of the bookkeeping runs."""
    generator = torch.Generator().manual_seed(7)
    scales = torch.rand((1, 3, 12, 10), generator=generator) * 20 + 0.1
    noise = torch.randn((steps, 1, 3, 12, 10), generator=generator)
    x = torch.randn((1, 3, 12, 10), generator=generator) * 30
    opt = optimize.LBFGS(history_size=4, history_device=history_device)
    seen = []
    for k in range(steps):
        grad = scales * x + 1e-3 * x.pow(3) + (5.0 if k % 7 == 3 else 0.0) * noise[k]
        opt.step(x, grad)
        seen.append(x.clone())
    return seen


def test_lbfgs_history_on_another_device_object_gives_identical_steps() -> None:
    """History slots on a separate device object (the CPU again: the staging and copy
    path all the same) against slots beside the image: every iterate bit-identical."""
    plain = _run_lbfgs(None)
    away = _run_lbfgs(torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(plain, away, strict=True))
    assert not torch.equal(plain[0], plain[-1])


def test_lbfgs_history_away_keeps_only_staging_beside_the_image() -> None:
    opt = optimize.LBFGS(history_size=3, history_device=torch.device("cpu"))
    x = torch.ones(1, 3, 8, 8)
    for k in range(3):
        opt.step(x, x * (k + 1.0))
    st = opt.state
    assert len(st.s) == len(st.y) == 4 and len(st.staging) == 2
    assert all(t.device == torch.device("cpu") for t in st.s + st.y)
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(st.s, st.y, strict=True))


# ------------------------------------------------------------------------------- the plan


def _top(params: RenderParams, width: int, height: int):
    scale = plan_scales(params, width, height)[-1]
    return scale, max(scale.width, scale.height)


def test_default_8k_lbfgs_job_fits_an_80_gb_card() -> None:
    """7680x4320 with the default L-BFGS on one 80 GB card (the budget a worker takes:
    its free memory, about 79 GiB, times MARGIN), bf16 or fp32, history on the device."""
    params = RenderParams(size=7680)
    budget = int(79 * GIB * memory.MARGIN)
    for dtype_bytes in (2, 4):
        layout = memory.job_layout(params, 7680, 4320, budget, dtype_bytes, "cuda")
        assert all(p.peak.total <= budget for p in layout)
        assert all(p.history == "device" for p in layout)


def test_plan_puts_history_on_host_exactly_when_it_must() -> None:
    """8K default job on a GPU: history on the device while any tile fits that way; below
    that, on the host (device bytes without the history, host bytes with it); and an
    error only when even the host plan does not fit, or the host cannot hold it."""
    params = RenderParams(size=7680)
    scale, side = _top(params, 7680, 4320)

    def peak(on_host: bool) -> memory.Peak:
        return memory.scale_peak(params, scale, side, MIN_TILE, 2, "cuda", on_host)

    pixels = scale.width * scale.height
    history = pixels * memory.IMAGE * memory.history_images(params)
    assert peak(True).host == history and peak(False).host == 0
    assert peak(False).total - peak(True).total == (
        pixels * memory.IMAGE * (memory.history_images(params) - memory.LBFGS_STAGING))

    # Just enough for the smallest tile with the history on the device: it stays there.
    plan = memory.plan_scale(params, scale, side, peak(False).total, 2, "cuda")
    assert plan.history == "device" and plan.tile is not None
    # One byte less: only the host can take it, with a larger tile than MIN_TILE.
    short = peak(False).total - 1
    plan = memory.plan_scale(params, scale, side, short, 2, "cuda")
    assert plan.history == "host" and plan.peak.host == history
    assert plan.peak.total <= short and plan.tile is not None and plan.tile > MIN_TILE
    assert memory.job_layout(params, 7680, 4320, short, 2, "cuda")[-1].history == "host"
    # The host too small for the history: no plan, and the message says so.
    with pytest.raises(memory.DoesNotFit, match="lbfgs_history"):
        memory.plan_scale(params, scale, side, short, 2, "cuda", host_budget=history - 1)
    # Below the history-on-host plan's own floor: the whole image goes to the host
    # (test_image_on_host.py).
    assert memory.plan_scale(params, scale, side, peak(True).total - 1, 2, "cuda").image \
        == "host"
    # On the CPU the host is the device: never "host". Adam has no history to move.
    with pytest.raises(memory.DoesNotFit):
        memory.plan_scale(params, scale, side, short, 4, "cpu")
    adam = RenderParams(size=7680, optimizer="adam")
    assert memory.plan_scale(adam, scale, side, short, 2, "cuda").history == "device"


def test_farm_check_counts_a_gpu_worker_with_host_memory_for_the_history() -> None:
    params = RenderParams(size=7680)
    scale, side = _top(params, 7680, 4320)
    short = memory.scale_peak(params, scale, side, MIN_TILE, 2, "cuda").total - 1
    assert memory.farm_problem(params, 7680, 4320, [memory.WorkerMemory(short, 2, "cuda")]) \
        is None
    starved = memory.WorkerMemory(short, 2, "cuda", host_budget=GIB)
    assert memory.farm_problem(params, 7680, 4320, [starved]) is not None
    assert memory.WorkerMemory.from_dict(starved.to_dict()) == starved


@pytest.mark.timeout(1800)
def test_render_follows_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """render() builds each scale's L-BFGS with the history where the plan put it (here a
    plan with it on the host at the last scale, on the CPU), and the picture is the same."""
    params = RenderParams(size=64, min_size=45, iterations=(3, 4))
    spec = RenderSpec(scene(64, 48), [stripes(48, 48)], params)
    made: list[torch.device | None] = []
    real_optimizer = engine._optimizer

    def spy(*args: object, **kwargs: object) -> object:
        optimizer = real_optimizer(*args, **kwargs)  # type: ignore[arg-type]
        made.append(getattr(optimizer, "history_device", None))
        return optimizer

    monkeypatch.setattr(engine, "_optimizer", spy)
    expected = np.asarray(render(spec, device="cpu"))
    assert made == [None, None]

    real_layout = memory.job_layout

    def host_at_last(*args: object, **kwargs: object) -> list[memory.ScalePlan]:
        layout = real_layout(*args, **kwargs)  # type: ignore[arg-type]
        last = layout[-1]
        return [*layout[:-1], memory.ScalePlan(last.tile, "host", last.peak)]

    monkeypatch.setattr(memory, "job_layout", host_at_last)
    made.clear()
    got = np.asarray(render(spec, device="cpu"))
    assert made == [None, torch.device("cpu")]
    assert np.array_equal(got, expected)
