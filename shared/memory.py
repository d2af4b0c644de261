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
    content_layer_weights,
    layer_shape,
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
# Resident memory on the CPU; on a GPU, the weights only. The CPU figure was 900 MiB until
# 2026-11-27, when a fresh process peaked at 0.68 GiB at 128x72 (the plan 1.32x over).
BASE_BYTES = {"cpu": 800 * 2**20, "cuda": 120 * 2**20}
# One fp32 BGR image per pixel.
IMAGE = 12
# Image-sized buffers besides the optimiser's: the image, its gradient, the content image,
# the gradient's transient copy.
IMAGES = 4
# Share of the free memory a plan may use: allocator fragmentation and other processes.
MARGIN = 0.85
# Device buffers of an L-BFGS whose history lives on the host (optimize.LBFGS's staging).
LBFGS_STAGING = 4
# Crop-sized buffers on the device when the whole image lives on the host (tiled.py): the
# crop's copy, its gradient, and the gradient's way back.
CROP_IMAGES = 3
# Where a scale's whole-image state lives, in the order the plan tries them (fastest
# first): all on the device; the L-BFGS history in host memory, streamed in every
# iteration; or the image, its gradient, the content target and all the optimiser's state
# in host memory, only the tiles' crops going through the device. The last two on a GPU
# only: on the CPU the host is the device.
PLACEMENTS = ("device", "history", "image")


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


def content_target_bytes(params: RenderParams) -> int:
    """Bytes per input pixel of the content targets: each content layer's map in fp32
    (relu4_2: 512 channels at stride 8, 32 bytes; relu5_1 adds 8; an anchored layer's mask,
    one value per position, adds 1/512 of its map and is left in the rounding)."""
    return sum(4 * channels // stride**2
               for channels, stride in map(layer_shape, content_layer_weights(params)))


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
    host: int = 0  # in host memory besides: what the placement puts there

    @property
    def total(self) -> int:
        """On the device: what the budget is for."""
        return self.base + self.state + self.network


def scale_peak(params: RenderParams, scale: Scale, final_side: int, tile: int | None,
               dtype_bytes: int = 4, device: str = "cpu", history_on_host: bool = False,
               image_on_host: bool = False) -> Peak:
    """Predicted peak of one scale, rendered untiled (`tile` None) or with `tile`; the
    L-BFGS history on the device or (`history_on_host`) in host memory; or
    (`image_on_host`, tiled only) every whole-image buffer in host memory."""
    pixels = scale.width * scale.height
    crop = crop_pixels(scale.width, scale.height, tile)
    target = content_target_bytes(params)
    whole = pixels * (IMAGE * (IMAGES + optimizer_images(params)) + target)
    if image_on_host:
        state, host = crop * (IMAGE * CROP_IMAGES + target), whole
    elif history_on_host:
        state = pixels * (IMAGE * (IMAGES + optimizer_images(params, True)) + target)
        host = pixels * IMAGE * history_images(params)
    else:
        state, host = whole, 0
    objective = GRAD_BYTES_PER_PIXEL[dtype_bytes] * crop
    style_forward = 0
    aspect = min(scale.width, scale.height) / max(scale.width, scale.height)
    for side in style_long_sides(params, max(scale.width, scale.height), final_side):
        # The style's aspect is unknown here: as the content's, the likeliest.
        short = max(1, round(side * aspect))
        style_forward = max(style_forward, FORWARD_BYTES_PER_PIXEL[dtype_bytes]
                            * crop_pixels(side, short, tile))
    return Peak(BASE_BYTES["cuda" if device.startswith("cuda") else "cpu"], state,
                max(objective, style_forward), host)


class DoesNotFit(ValueError):
    """No tile size fits the budget: the message names the fix."""


@dataclass(frozen=True)
class ScalePlan:
    """How one scale renders: its tile (None: untiled), where the L-BFGS history lives
    ("device" or "host"), where the image and the rest of the whole-image state live
    ("device" or "host"; on the host, the history is there too), and the predicted peak."""

    tile: int | None
    history: str
    peak: Peak
    image: str = "device"

    @property
    def placement(self) -> str:
        """Its name in PLACEMENTS."""
        return "image" if self.image == "host" else "history" if self.history == "host" \
            else "device"


def plan_scale(params: RenderParams, scale: Scale, final_side: int, budget: int,
               dtype_bytes: int = 4, device: str = "cpu", host_budget: int | None = None
               ) -> ScalePlan:
    """The fastest way a scale fits `budget` bytes of the device: the first of PLACEMENTS
    that fits, untiled if it can, else with the largest tile that fits. The host
    placements are tried only on a GPU, only where `host_budget` (None: not checked) holds
    what they put there; the image on the host is always tiled. The job's own `tile_size`
    is taken as given. Raises DoesNotFit, naming the fix, when nothing fits."""
    smallest = scale_peak(params, scale, final_side, MIN_TILE, dtype_bytes, device)
    where = "device"
    for placement in _placements(params, device):
        def plan(tile: int | None, placement: str = placement) -> ScalePlan:
            peak = scale_peak(params, scale, final_side, tile, dtype_bytes, device,
                              placement != "device", placement == "image")
            return ScalePlan(tile, "device" if placement == "device" else "host", peak,
                             "host" if placement == "image" else "device")

        if host_budget is not None and plan(MIN_TILE).peak.host > host_budget:
            continue
        if params.tile_size is not None:
            candidates: list[int | None] = [params.tile_size]
        else:
            # Every multiple of TILE_ALIGN from the longest side down (a few hundred sums
            # at most): the crop is not monotonic in the tile (tiles are evened out).
            longest = max(scale.width, scale.height) // TILE_ALIGN * TILE_ALIGN
            candidates = [*([None] if placement != "image" else []),
                          *range(longest, MIN_TILE - 1, -TILE_ALIGN)]
        for tile in candidates:
            if (found := plan(tile)).peak.total <= budget:
                return found
        smallest, where = plan(MIN_TILE).peak, placement
    if params.tile_size is not None:  # the job's choice, unchecked as before
        return ScalePlan(params.tile_size, "device",
                         scale_peak(params, scale, final_side, params.tile_size, dtype_bytes,
                                    device))
    raise DoesNotFit(_advice(params, scale, smallest, budget, where))


def _placements(params: RenderParams, device: str) -> list[str]:
    if not device.startswith("cuda"):
        return ["device"]
    return [p for p in PLACEMENTS if p != "history" or params.optimizer == "lbfgs"]


def choose_tile(params: RenderParams, scale: Scale, final_side: int, budget: int,
                dtype_bytes: int = 4, device: str = "cpu") -> int | None:
    """The tile for a scale (plan_scale's), on a device that keeps its history."""
    return plan_scale(params, scale, final_side, budget, dtype_bytes, device).tile


def _advice(params: RenderParams, scale: Scale, peak: Peak, budget: int,
            placement: str) -> str:
    gib = 2**30
    fix = ("lower lbfgs_history or use optimizer adam, or lower size"
           if params.optimizer == "lbfgs" else "lower size")
    where = {"device": "", "history": " with the L-BFGS history in host memory",
             "image": " with the image and optimizer state in host memory"}[placement]
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
