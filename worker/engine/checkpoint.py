"""A render between two scales, as plain tensors: what another machine needs to go on.

Taken after each scale but the last (see `render(on_checkpoint=)`), so a worker that dies
at the full-size scale costs that scale only, not the whole schedule. Everything is on
the CPU and made of tensors, ints and floats, so it round-trips through `torch.save` and
`torch.load(weights_only=True)`: loading one never runs code from the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from worker.engine.optimize import AdamState

FORMAT = 1


class CheckpointMismatch(ValueError):
    """The checkpoint belongs to another plan of scales: start over instead."""


@dataclass
class Checkpoint:
    scale: int  # index of the last completed scale
    scales: int  # scales in the plan: a checkpoint of a different plan is refused
    x: torch.Tensor  # the image after that scale, (1, 3, H, W), BGR minus the mean
    adam: AdamState | None  # Adam's state, carried to the next scale; None for L-BFGS
    elapsed: float  # seconds spent so far, over every attempt

    def to_dict(self) -> dict[str, Any]:
        adam = None if self.adam is None else {
            "step": self.adam.step, "m": _cpu(self.adam.m), "v": _cpu(self.adam.v),
            "ema": _cpu(self.adam.ema)}
        return {"format": FORMAT, "scale": self.scale, "scales": self.scales,
                "x": _cpu(self.x), "adam": adam, "elapsed": self.elapsed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        if data.get("format") != FORMAT:
            raise ValueError(f"checkpoint format {data.get('format')!r}, expected {FORMAT}")
        adam = data["adam"]
        return cls(scale=int(data["scale"]), scales=int(data["scales"]), x=data["x"],
                   adam=None if adam is None else AdamState(
                       step=int(adam["step"]), m=adam["m"], v=adam["v"], ema=adam["ema"]),
                   elapsed=float(data["elapsed"]))

    def to(self, device: torch.device) -> Checkpoint:
        """A copy on `device`, to continue from."""
        adam = None if self.adam is None else AdamState(
            step=self.adam.step, m=_to(self.adam.m, device), v=_to(self.adam.v, device),
            ema=_to(self.adam.ema, device))
        return Checkpoint(self.scale, self.scales, self.x.to(device), adam, self.elapsed)


def _cpu(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.detach().to("cpu", copy=True)


def _to(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device).clone()
