"""The memory plan (shared/memory.py): its predictions against measured peaks, its choice
of tiles, and a job that cannot fit stopped before anything renders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared import memory
from shared.spec import RenderParams, plan_scales
from tests.engine.patterns import scene, stripes
from worker.engine import tiled
from worker.engine.render import RenderSpec, render
from worker.engine.vgg import load_vgg

BENCH = Path(__file__).resolve().parents[2] / "bench" / "memory.py"
GIB = 2**30


def test_plan_halo_is_the_networks() -> None:
    assert tiled.halo(load_vgg("max", "cpu", "relu5_1"), "relu5_1") == memory.HALO


@pytest.mark.timeout(1800)  # a hang guard: a fresh process loads torch and the model
@pytest.mark.parametrize(("width", "height", "tile"), [(128, 72, None), (256, 144, None),
                                                       (384, 216, 128)])
def test_plan_predicts_measured_peak(width: int, height: int, tile: int | None) -> None:
    """Peak resident memory of a fresh process that sets up a top scale and runs two L-BFGS
    iterations (bench/memory.py's measurement, history 1), within 25 % of the plan's
    prediction. This process holds an extra GiB meanwhile: the child's peak must be its own,
    not the high-water mark it inherits through fork (ru_maxrss keeps it across exec)."""
    ballast = bytearray(GIB)
    ballast[::4096] = b"\x01" * (GIB // 4096)  # resident, not just reserved
    out = subprocess.run([sys.executable, str(BENCH), "--child", str(width), str(height),
                          str(tile or 0)], check=True, capture_output=True, text=True,
                         timeout=1800)
    measured = json.loads(out.stdout.strip().splitlines()[-1])["peak"]
    del ballast
    params = RenderParams(width=width, height=height, min_size=max(width, height),
                          iterations=(2,), tile_size=tile, lbfgs_history=1)  # as the child's
    scale = plan_scales(params, width, height)[-1]
    predicted = memory.scale_peak(params, scale, max(width, height), tile).total
    assert abs(predicted - measured) <= 0.25 * measured, (predicted, measured)


def test_untiled_when_it_fits_else_the_largest_tile_that_fits() -> None:
    params = RenderParams(size=3840)
    scale = plan_scales(params, 3840, 2160)[-1]
    untiled = memory.scale_peak(params, scale, 3840, None).total
    assert memory.choose_tile(params, scale, 3840, untiled) is None
    budget = untiled // 2
    tile = memory.choose_tile(params, scale, 3840, budget)
    assert tile is not None and tile % 16 == 0
    assert memory.scale_peak(params, scale, 3840, tile).total <= budget
    for bigger in range(tile + 16, 3840 + 1, 16):
        assert memory.scale_peak(params, scale, 3840, bigger).total > budget
    assert memory.choose_tile(RenderParams(size=3840, tile_size=256), scale, 3840, budget) == 256


def test_job_that_cannot_fit_fails_before_rendering() -> None:
    """An L-BFGS history of 1000 images never fits 2 GiB: the render raises at once, with
    the fix in its message, before one iteration (so before any scale is wasted)."""
    events: list = []
    params = RenderParams(size=128, min_size=64, iterations=(2,), lbfgs_history=1000)
    with pytest.raises(memory.DoesNotFit, match="lbfgs_history"):
        render(RenderSpec(scene(128, 96), [stripes(64, 64)], params), on_progress=events.append,
               device="cpu", memory_budget=memory.BASE_BYTES["cpu"] + 2**20)
    assert events == []


def test_farm_problem_names_no_problem_when_a_worker_fits() -> None:
    params = RenderParams(size=7680)
    # 4 GiB of device, 1 GiB of host: too little for 8K even with the image on the host.
    small = memory.WorkerMemory(4 * GIB, 2, "cuda", host_budget=GIB)
    big = memory.WorkerMemory(80 * GIB, 2, "cuda")
    assert memory.farm_problem(params, 7680, 4320, [small]) is not None
    # The same card on a host with the RAM for the image and its optimiser runs it.
    roomy = memory.WorkerMemory(4 * GIB, 2, "cuda", host_budget=64 * GIB)
    assert memory.farm_problem(params, 7680, 4320, [roomy]) is None
    assert memory.farm_problem(params, 7680, 4320, [small, big]) is None
    assert memory.farm_problem(params, 7680, 4320, []) is None
    assert memory.WorkerMemory.from_json(big.to_json()) == big
