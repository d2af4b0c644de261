"""Where the engine runs, and how the convolutions are computed there.

On CUDA the convolutions run under bf16 autocast in channels_last layout, because that is
where tensor cores pay; everything that sums over positions (Gram matrices, means,
covariances, losses) accumulates in fp32 (see losses.moments), since those sums lose too
much in 8-bit mantissas. GPUs without native bf16 (before Ampere) run fp32: fp16's 5
exponent bits underflow the small style gradients of the deep layers unless the loss is
scaled, and a wrongly scaled render fails silently, as a grey picture.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from shared.settings import get_settings

# Compute capability from which bf16 is native (Ampere); below, torch only emulates it.
_NATIVE_BF16 = (8, 0)


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
    """The autocast dtype for the convolutions, None for full fp32.

    settings.precision: "auto" is bf16 on a GPU that has it natively and fp32 elsewhere;
    "fp32" always fp32 (a GPU then scores like the CPU); "bf16" always bf16, on the CPU too,
    which is how the tests exercise the GPU's reduced-precision path without a GPU.
    """
    precision = get_settings().precision
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"STYLEFARM_PRECISION={precision!r}: use auto, fp32 or bf16")
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp32" or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.get_device_capability(device) >= _NATIVE_BF16 else None


@contextlib.contextmanager
def conv_autocast(device: torch.device) -> Iterator[None]:
    dtype = conv_dtype(device)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def memory_format(device: torch.device) -> torch.memory_format:
    """The layout of every image-sized tensor on this device: the image, its gradient and
    the optimiser's state share the network's layout, so element-wise steps never mix them.

    channels_last on a GPU, and wherever precision is "bf16": that setting runs the GPU's
    whole path (arithmetic and layout) on the CPU, for tests.
    """
    if device.type == "cuda" or get_settings().precision == "bf16":
        return torch.channels_last
    return torch.contiguous_format


def in_layout_of(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`tensor` with `like`'s strides: itself when they match, else one copy.

    Gradients can come back in another layout than the image (a sum of paths through the
    network and through pixel-space terms like TV); the optimisers' element-wise updates
    then run at a fraction of their speed on every iteration.
    """
    if tensor.stride() == like.stride():
        return tensor
    return torch.empty_like(like).copy_(tensor)


def memory_budget(device: torch.device) -> int:
    """Bytes a render may plan to use here: settings.memory_limit_mb when set, else the
    device's free memory (a GPU's, or the host's available RAM), times memory.MARGIN."""
    from shared.memory import MARGIN

    limit = get_settings().memory_limit_mb
    if limit:
        return limit * 2**20
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * MARGIN)
    return int(available_ram() * MARGIN)


def activation_bytes(device: torch.device) -> int:
    """Bytes per activation a render here keeps (the memory plan's width): 2 under bf16
    autocast, else 4."""
    return 2 if conv_dtype(device) is not None else 4


def host_budget(device: torch.device) -> int | None:
    """Host memory a render on this GPU may fill with its L-BFGS history (the memory plan
    puts it there when the device is short): the available RAM times memory.MARGIN. None on
    the CPU, where the host is the device."""
    from shared.memory import MARGIN

    return int(available_ram() * MARGIN) if device.type == "cuda" else None


def available_ram() -> int:
    """MemAvailable from /proc/meminfo (Linux); elsewhere, a conservative 8 GiB."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30
