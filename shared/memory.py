"""The memory plan: a render's peak memory predicted from its parameters, and the tile
size that keeps it under a budget.

Pure Python (no torch), so the API refuses at submit a job that no worker could run, with
the same numbers a worker uses to choose its tiles. The per-pixel constants were measured
on a CPU in fp32 (peak resident memory; bench/memory.py prints measured beside predicted);
the bf16 ones are derived from them (2-byte activations), not measured on a GPU.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from shared.spec import (
    MIN_TILE,
    TILE_ALIGN,
    RenderParams,
    Scale,
    plan_scales,
    style_long_sides,
)

# The tiled objective's halo up to relu5_1: VGG-19's receptive reach (70 px) rounded up to
# TILE_ALIGN. worker/engine/tiled.py computes it from the network; a test checks they agree.
HALO = 80
# Bytes per input pixel of a forward and backward pass up to relu5_1 (activations kept for
# the backward and the backward's own transients), and of a forward pass without grad.
GRAD_BYTES_PER_PIXEL = {4: 1800, 2: 1000}
FORWARD_BYTES_PER_PIXEL = {4: 800, 2: 440}
# The process before any image: torch, the VGG-19 weights up to relu5_1, allocator slack.
# Resident memory on the CPU; on a GPU, the weights only.
BASE_BYTES = {"cpu": 900 * 2**20, "cuda": 120 * 2**20}
# One fp32 BGR image per pixel; and relu4_2's map (512 channels, stride 8) in fp32.
IMAGE = 12
CONTENT_TARGET = 512 * 4 // 64
# Image-sized buffers besides the optimiser's: the image, its gradient, the content image,
# the gradient's transient copy.
IMAGES = 4
# Share of the free memory a plan may use: allocator fragmentation and other processes.
MARGIN = 0.85
# Device buffers of an L-BFGS whose history lives on the host (optimize.LBFGS's staging).
LBFGS_STAGING = 4


def optimizer_images(params: RenderParams, history_on_host: bool = False) -> int:
    """Image-sized buffers of the optimiser's state on the device: L-BFGS keeps history+1
    (s, y) slots, its last point and gradient, and its search direction; with the history
    on the host, two (s, y) pairs of buffers to stream the slots through instead of the
    slots. Adam: two moments and the mean."""
    if params.optimizer == "lbfgs":
        return 3 + (LBFGS_STAGING if history_on_host else history_images(params))
    return 3


def history_images(params: RenderParams) -> int:
    """Image-sized buffers of the L-BFGS history (its slots), wherever they live."""
    return 2 * (params.lbfgs_history + 1) if params.optimizer == "lbfgs" else 0


def tile_step(length: int, tile: int) -> int:
    """The pixels each tile owns along an axis of `length`: as even a split into tiles of
    at most `tile` as TILE_ALIGN allows (the last tile takes the remainder)."""
    count = math.ceil(length / tile)
    return math.ceil(length / count / TILE_ALIGN) * TILE_ALIGN


def crop_pixels(width: int, height: int, tile: int | None, halo: int = HALO) -> int:
    """Pixels of the largest crop (tile plus halo) that the network sees at once."""
    if tile is None:
        return width * height
    return (min(width, tile_step(width, tile) + 2 * halo)
            * min(height, tile_step(height, tile) + 2 * halo))


@dataclass(frozen=True)
class Peak:
    """A predicted peak in bytes, by part (for messages and the bench's table)."""

    base: int
    state: int  # whole-image buffers, optimiser state, content target (on the device)
    network: int  # the largest pass of the network: the objective or a style forward
    host: int = 0  # in host memory besides: the L-BFGS history, when the plan puts it there

    @property
    def total(self) -> int:
        """On the device: what the budget is for."""
        return self.base + self.state + self.network


def scale_peak(params: RenderParams, scale: Scale, final_side: int, tile: int | None,
               dtype_bytes: int = 4, device: str = "cpu", history_on_host: bool = False
               ) -> Peak:
    """Predicted peak of one scale, rendered untiled (`tile` None) or with `tile`, the
    L-BFGS history on the device or (`history_on_host`) in host memory."""
    pixels = scale.width * scale.height
    state = pixels * (IMAGE * (IMAGES + optimizer_images(params, history_on_host))
                      + CONTENT_TARGET)
    objective = GRAD_BYTES_PER_PIXEL[dtype_bytes] * crop_pixels(scale.width, scale.height,
                                                                 tile)
    style_forward = 0
    aspect = min(scale.width, scale.height) / max(scale.width, scale.height)
    for side in style_long_sides(params, max(scale.width, scale.height), final_side):
        # The style's aspect is unknown here: as the content's, the likeliest.
        short = max(1, round(side * aspect))
        style_forward = max(style_forward, FORWARD_BYTES_PER_PIXEL[dtype_bytes]
                            * crop_pixels(side, short, tile))
    host = pixels * IMAGE * history_images(params) if history_on_host else 0
    return Peak(BASE_BYTES["cuda" if device.startswith("cuda") else "cpu"], state,
                max(objective, style_forward), host)


class DoesNotFit(ValueError):
    """No tile size fits the budget: the message names the fix."""


@dataclass(frozen=True)
class ScalePlan:
    """How one scale renders: its tile (None: untiled), where the L-BFGS history lives
    ("device" or "host"), and the predicted peak of that choice."""

    tile: int | None
    history: str
    peak: Peak


def plan_scale(params: RenderParams, scale: Scale, final_side: int, budget: int,
               dtype_bytes: int = 4, device: str = "cpu", host_budget: int | None = None
               ) -> ScalePlan:
    """The fastest way a scale fits `budget` bytes of the device: untiled, else the largest
    tile that fits; all with the L-BFGS history on the device, and only when no tile fits
    that way (on a GPU), the same with the history in host memory (pinned, streamed in
    every iteration), if `host_budget` (None: not checked) holds it. The job's own
    `tile_size` is taken as given. Raises DoesNotFit, naming the fix, when nothing fits."""
    placements = [False]
    if params.optimizer == "lbfgs" and device.startswith("cuda"):
        placements.append(True)
    smallest = None
    for on_host in placements:
        def peak(tile: int | None, on_host: bool = on_host) -> Peak:
            return scale_peak(params, scale, final_side, tile, dtype_bytes, device, on_host)

        if on_host and host_budget is not None and peak(None).host > host_budget:
            continue
        place = "host" if on_host else "device"
        if params.tile_size is not None:
            if peak(params.tile_size).total <= budget:
                return ScalePlan(params.tile_size, place, peak(params.tile_size))
            continue
        if peak(None).total <= budget:
            return ScalePlan(None, place, peak(None))
        # Every multiple of TILE_ALIGN from the longest side down (a few hundred sums at
        # most): the crop is not monotonic in the tile (tiles are evened out), no bisection.
        longest = max(scale.width, scale.height) // TILE_ALIGN * TILE_ALIGN
        for tile in range(longest, MIN_TILE - 1, -TILE_ALIGN):
            if peak(tile).total <= budget:
                return ScalePlan(tile, place, peak(tile))
        smallest = peak(MIN_TILE)
    if params.tile_size is not None:  # the job's choice, unchecked as before
        return ScalePlan(params.tile_size, "device",
                         scale_peak(params, scale, final_side, params.tile_size, dtype_bytes,
                                    device))
    if smallest is None:  # only the host could have taken the history, and it cannot
        smallest = scale_peak(params, scale, final_side, MIN_TILE, dtype_bytes, device)
    raise DoesNotFit(_advice(params, scale, smallest, budget))


def choose_tile(params: RenderParams, scale: Scale, final_side: int, budget: int,
                dtype_bytes: int = 4, device: str = "cpu") -> int | None:
    """The tile for a scale (plan_scale's), on a device that keeps its history."""
    return plan_scale(params, scale, final_side, budget, dtype_bytes, device).tile


def _advice(params: RenderParams, scale: Scale, peak: Peak, budget: int) -> str:
    gib = 2**30
    fix = ("lower lbfgs_history or use optimizer adam, or lower size"
           if params.optimizer == "lbfgs" else "lower size")
    where = " with the L-BFGS history in host memory" if peak.host else ""
    return (f"the {scale.width}x{scale.height} scale needs {peak.total / gib:.1f} GiB even in "
            f"{MIN_TILE} px tiles{where} ({peak.state / gib:.1f} GiB of it whole-image "
            f"buffers and optimizer state), over the {budget / gib:.1f} GiB this worker can "
            f"use: {fix}")


def job_layout(params: RenderParams, content_width: int, content_height: int, budget: int,
               dtype_bytes: int = 4, device: str = "cpu", host_budget: int | None = None
               ) -> list[ScalePlan]:
    """Every scale's plan; raises DoesNotFit, before anything renders, when one has none."""
    plan = plan_scales(params, content_width, content_height)
    final_side = max(plan[-1].width, plan[-1].height)
    return [plan_scale(params, s, final_side, budget, dtype_bytes, device, host_budget)
            for s in plan]


def job_plan(params: RenderParams, content_width: int, content_height: int, budget: int,
             dtype_bytes: int = 4, device: str = "cpu", host_budget: int | None = None
             ) -> list[int | None]:
    """The tile of every scale (job_layout's); raises DoesNotFit as it does."""
    return [p.tile for p in job_layout(params, content_width, content_height, budget,
                                       dtype_bytes, device, host_budget)]


# ------------------------------------------------------------------ what workers publish


@dataclass(frozen=True)
class WorkerMemory:
    """What a worker can give one render: its budget in bytes (free device memory at start,
    times MARGIN, or settings.memory_limit_mb), its activation width and device type."""

    budget: int
    dtype_bytes: int = 4
    device: str = "cpu"
    host_budget: int | None = None  # host memory for an L-BFGS history put there (GPU)

    def to_dict(self) -> dict[str, int | str | None]:
        return {"budget": self.budget, "dtype_bytes": self.dtype_bytes, "device": self.device,
                "host_budget": self.host_budget}

    @classmethod
    def from_dict(cls, data: dict) -> WorkerMemory:
        host = data.get("host_budget")
        return cls(int(data["budget"]), int(data["dtype_bytes"]), str(data["device"]),
                   None if host is None else int(host))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkerMemory:
        return cls.from_dict(json.loads(text))


# A worker publishes its WorkerMemory as this field of its heartbeat record (shared/
# workers.py, written by worker/beacon.py every third of the lease): the entry lives exactly
# as long as the worker does, and a dead worker's memory stops counting a lease after its
# last beat, with its record. (A Redis hash of worker -> memory, as before, kept a dead
# worker's entry for ever, and the API went on trusting a worker that no longer existed.)
RECORD_FIELD = "memory"


def live_worker_memory(records: list[dict]) -> list[WorkerMemory]:
    """The memory of each live worker (shared.workers.live's records) that published one."""
    found = []
    for record in records:
        data = record.get(RECORD_FIELD)
        if not data:
            continue  # still loading its model, or a webhook-only worker
        try:
            found.append(WorkerMemory.from_dict(data))
        except (KeyError, TypeError, ValueError):
            continue  # a record of another version: not trusted
    return found


def farm_problem(params: RenderParams, content_width: int, content_height: int,
                 workers: list[WorkerMemory]) -> str | None:
    """Why no worker of the farm could run this job, or None (also when none is known)."""
    problem = None
    for worker in workers:
        try:
            job_layout(params, content_width, content_height, worker.budget,
                       worker.dtype_bytes, worker.device, worker.host_budget)
        except DoesNotFit as exc:
            problem = f"no worker has the memory for this job: {exc}"
        else:
            return None
    return problem
