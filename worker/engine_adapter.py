"""The one place the task layer meets the engine's API (worker.engine.render).

Loads a job's images from storage (decoded images cached per process, keyed by
sha256: a batch that reuses a few styles over many contents decodes each style
once, and computes its style targets once per scale size), builds the engine's
`RenderSpec`, and maps its progress events to ours.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from shared.spec import RenderParams, blend_weights
from shared.storage import atomic_write
from worker.engine.images import ImageError, open_image

if TYPE_CHECKING:
    from worker.jobrun import JobInputs
    from worker.runtime import Runtime

__all__ = ["ImageError", "Progress", "drop_checkpoint", "is_out_of_memory", "memory_kind",
           "render"]
log = logging.getLogger(__name__)

_DECODED_CACHE_SIZE = 16
_STYLE_TARGET_CACHE_SIZE = 64  # (style, scale size) pairs


@dataclass
class Progress:
    """What the task records from one engine iteration."""

    progress: float
    scale: int
    scale_count: int
    iteration: int
    # Reading the loss or a preview waits for the device: callables, called only when recorded.
    loss: Callable[[], float]
    preview: Callable[[], Image.Image] | None


class BoundedCache(MutableMapping[Hashable, Any]):
    """A least-recently-used mapping of at most `size` entries.

    Holds the engine's style targets across jobs: a batch that puts a few styles on many
    contents computes each style's targets once per scale size per worker process. An
    entry is a few MB of device memory (Gram matrices up to 512×512 per layer).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()

    def __getitem__(self, key: Hashable) -> Any:
        value = self._items[key]
        self._items.move_to_end(key)
        return value

    def __setitem__(self, key: Hashable, value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __delitem__(self, key: Hashable) -> None:
        del self._items[key]

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class DecodedImages:
    """Recently used input images, decoded; inputs are immutable (content-addressed)."""

    def __init__(self, size: int = _DECODED_CACHE_SIZE) -> None:
        self._images: BoundedCache = BoundedCache(size)

    def get(self, runtime: Runtime, sha: str, role: str) -> Image.Image:
        image = self._images.get(sha)
        if image is None:
            path = runtime.storage.image_path(sha)
            if not path.is_file():
                raise ImageError(f"{role} image {sha[:12]}… is missing from storage; upload it "
                                 "again and retry the job")
            try:
                image = open_image(path, runtime.settings.max_input_pixels)
            except ImageError as exc:
                raise ImageError(f"{role} image {sha[:12]}… could not be decoded: "
                                 f"{str(exc).split(': ', 1)[-1]}") from exc
            self._images[sha] = image
        return image


_decoded = DecodedImages()
style_targets = BoundedCache(_STYLE_TARGET_CACHE_SIZE)


def render(runtime: Runtime, inputs: JobInputs, params: RenderParams,
           on_progress: Callable[[Progress], Any]) -> Image.Image:
    """Run the engine for a job; `on_progress` may raise to stop it within the iteration.

    After each scale the render is checkpointed to the storage volume, and a job that an
    earlier attempt checkpointed (its worker died) goes on from there, on whichever
    worker now runs it.
    """
    from worker.engine.render import RenderSpec
    from worker.engine.render import render as engine_render

    content = _decoded.get(runtime, inputs.content, "content")
    styles = [_decoded.get(runtime, sha, "style") for sha, _ in inputs.styles]
    init = _decoded.get(runtime, inputs.init, "init") if inputs.init else None
    # The API folds style_weights into the styles; jobs stored before it did may carry
    # style_weights of any length: the same rule (shared.spec.blend_weights) reads both.
    weights = blend_weights(params.style_weights, [weight for _, weight in inputs.styles])
    params = dataclasses.replace(params, style_weights=weights)
    spec = RenderSpec(content=content, styles=styles, params=params, init_image=init,
                      style_ids=[sha for sha, _ in inputs.styles])

    def forward(event: Any) -> None:
        on_progress(Progress(
            progress=event.fraction, scale=event.scale, scale_count=event.scales,
            iteration=event.iteration, loss=lambda: event.loss, preview=event.preview))

    from worker.engine.checkpoint import CheckpointMismatch

    def run(resume: Any) -> Image.Image:
        return engine_render(spec, on_progress=forward, device=runtime.device,
                             target_cache=style_targets, resume=resume,
                             on_checkpoint=lambda c: save_checkpoint(runtime, inputs, c))

    resume = load_checkpoint(runtime, inputs)
    try:
        return run(resume)
    except CheckpointMismatch as exc:  # made by another version's plan of scales
        log.warning("job %s: checkpoint does not fit (%s); starting over", inputs.job_id, exc)
        return run(None)


def _fingerprint(inputs: JobInputs) -> dict[str, Any]:
    """What a checkpoint was made from: one made for other inputs is never resumed."""
    return {"job": inputs.job_id, "content": inputs.content,
            "styles": [[sha, weight] for sha, weight in inputs.styles],
            "init": inputs.init, "params": inputs.params}


def save_checkpoint(runtime: Runtime, inputs: JobInputs, checkpoint: Any) -> None:
    """Write atomically; a checkpoint that cannot be written costs only a later resume."""
    import torch

    data = {"inputs": _fingerprint(inputs), "checkpoint": checkpoint.to_dict()}
    try:
        atomic_write(runtime.storage.checkpoint_path(inputs.job_id),
                     lambda handle: torch.save(data, handle))
    except OSError:
        log.warning("job %s: checkpoint not written", inputs.job_id, exc_info=True)


def load_checkpoint(runtime: Runtime, inputs: JobInputs) -> Any:
    """The job's checkpoint from an earlier attempt, or None (none, unreadable, not ours)."""
    import torch

    from worker.engine.checkpoint import Checkpoint

    path = runtime.storage.checkpoint_path(inputs.job_id)
    if not path.exists():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        if data["inputs"] != json.loads(json.dumps(_fingerprint(inputs))):
            raise ValueError("made for other inputs")
        checkpoint = Checkpoint.from_dict(data["checkpoint"])
    except Exception as exc:  # a bad checkpoint means starting over, never failing
        log.warning("job %s: checkpoint ignored (%s)", inputs.job_id, exc)
        return None
    log.info("job %s: resuming after scale %d of %d", inputs.job_id, checkpoint.scale + 1,
             checkpoint.scales)
    return checkpoint


def drop_checkpoint(runtime: Runtime, job_id: str) -> None:
    runtime.storage.checkpoint_path(job_id).unlink(missing_ok=True)


# How allocators word running out: CUDA's caching allocator and cuDNN ("out of memory"),
# torch's CPU allocator ("DefaultCPUAllocator: can't allocate memory: you tried to
# allocate ... bytes. Error code 12 (Cannot allocate memory)").
_OUT_OF_MEMORY_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError | MemoryError) or (
        isinstance(exc, RuntimeError)
        and any(words in str(exc).lower() for words in _OUT_OF_MEMORY_WORDS))


def memory_kind(runtime: Runtime) -> str:
    return "GPU" if getattr(runtime.device, "type", "cpu") == "cuda" else "host"
