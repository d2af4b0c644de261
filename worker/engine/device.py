"""Where the engine runs, and how the convolutions are computed there.

On CUDA the convolutions run under bf16 autocast (fp16 where the GPU lacks bf16) in
channels_last layout, because that is where tensor cores pay; everything that sums over
positions (Gram matrices, means, covariances, losses) is cast back to fp32 by the caller,
since those sums lose too much in 8-bit mantissas.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from shared.settings import get_settings


def pick_device(setting: str = "auto") -> torch.device:
    """settings.device: "auto" takes the first GPU when there is one."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def prepare(device: torch.device) -> None:
    """Process-wide switches that only help: cuDNN picks the fastest kernels for our sizes."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def conv_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for the convolutions, None for full fp32 (CPU, or precision=fp32)."""
    if device.type != "cuda" or get_settings().precision == "fp32":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def conv_autocast(device: torch.device) -> Iterator[None]:
    dtype = conv_dtype(device)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def memory_format(device: torch.device) -> torch.memory_format:
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format
