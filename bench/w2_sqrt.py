"""Benchmark: the Wasserstein loss's tr (Σs^½ Σ Σs^½)^½, eigvalsh against Newton–Schulz.

Prints a table (it is not a timed test): for C = 64..512 channels, the seconds per call of
`losses.wasserstein_loss` plus its backward to the moments (the C×C float64 algebra only,
no network), each way, and how far apart the two are: the loss relative, and the gradient
with respect to the layer's features (what reaches the pixels) as its largest difference
over its largest entry. (With respect to the C×C sums themselves the two differ far more,
in directions no feature has: eigvalsh gives a zero eigenvalue no gradient, Newton–Schulz
one of 1/√δ; both vanish on the features.) The
moments are real: VGG-19 features of Tübingen (content) and Starry Night (style) at
`--side` px, from relu1_1 (64 channels), relu2_1 (128), relu3_1 (256) and relu4_1 (512).

    uv run python bench/w2_sqrt.py                  # CPU
    uv run python bench/w2_sqrt.py --device cuda    # where a GPU is lent

eigvalsh on a GPU waits for the host every call (the solver's result is checked there);
Newton–Schulz is matrix products only, so it never does.

Last measured on the 2-core development machine (CPU, float64, at nice 19 beside another
engineer's benchmark on both cores, so the seconds are loose), 128 px, 2026-11-27:

|   C | layer   | eigvalsh s/call | Newton–Schulz s/call | loss rel. diff | grad max diff / max |
|----:|---------|----------------:|---------------------:|---------------:|--------------------:|
|  64 | relu1_1 |          0.0007 |               0.0041 |        1.8e-03 |             1.5e-02 |
| 128 | relu2_1 |          0.0038 |               0.0162 |        1.3e-04 |             1.9e-03 |
| 256 | relu3_1 |          0.0576 |               0.6762 |        1.4e-04 |             1.8e-03 |
| 512 | relu4_1 |          0.0439 |               0.9592 |        9.6e-05 |             1.9e-03 |

Per layer the shift (1e-8 of ‖M‖_F) shows most at relu1_1, whose smallest eigenvalues are
real and far below it (5e-11 of ‖M‖_F): Newton–Schulz gives them less gradient. Summed
over the five layers and back-propagated to the pixels, the two stay within 1e-3
(tests/engine/test_w2_sqrt.py). No GPU has run this yet.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # bench/queue.py would shadow the standard library's queue

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from worker.engine import losses  # noqa: E402
from worker.engine.images import fit_long_side, resize, to_tensor  # noqa: E402
from worker.engine.vgg import load_vgg  # noqa: E402

LAYERS = {64: "relu1_1", 128: "relu2_1", 256: "relu3_1", 512: "relu4_1"}


def _features(device: torch.device, side: int) -> tuple[dict, dict]:
    model = load_vgg("max", str(device), "relu4_1")
    out = []
    for name in ("tubingen.jpg", "starry_night.jpg"):
        image = Image.open(ROOT / "samples" / name).convert("RGB")
        x = to_tensor(resize(image, fit_long_side(*image.size, side)), device)
        with torch.no_grad():
            out.append(model(x, frozenset(LAYERS.values())))
    return out[0], out[1]


def _feature_grad(method: str, features: torch.Tensor, target: losses.GaussianTarget
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    losses.ROOT_TRACE = method
    leaf = features.detach().clone().requires_grad_(True)
    loss = losses.wasserstein_loss(losses.moments(leaf), target)
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


def _call(method: str, stats: losses.Moments, target: losses.GaussianTarget
          ) -> tuple[torch.Tensor, torch.Tensor]:
    losses.ROOT_TRACE = method
    outer = stats.outer.detach().clone().requires_grad_(True)
    total = stats.total.detach().clone().requires_grad_(True)
    loss = losses.wasserstein_loss(losses.Moments(stats.count, total, outer), target)
    (grad,) = torch.autograd.grad(loss, outer)
    return loss.detach(), grad


def _seconds(method: str, stats: losses.Moments, target: losses.GaussianTarget,
             device: torch.device, repeat: int) -> float:
    _call(method, stats, target)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeat):
        _call(method, stats, target)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--side", type=int, default=128, help="image long side, px")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    content_features, style_features = _features(device, args.side)
    content = {k: losses.moments(f) for k, f in content_features.items()}
    style = {k: losses.moments(f) for k, f in style_features.items()}
    print(f"device {device}, {torch.get_num_threads()} threads, Newton–Schulz "
          f"{losses.NS_ITERATIONS} iterations, shift {losses.NS_SHIFT:g}; images {args.side} px")
    print("|   C | layer   | eigvalsh s/call | Newton–Schulz s/call | loss rel. diff "
          "| grad max diff / max |")
    print("|----:|---------|----------------:|---------------------:|---------------:"
          "|--------------------:|")
    for channels, layer in LAYERS.items():
        target = losses.gaussian_target(style[layer])
        exact, exact_grad = _feature_grad("eigh", content_features[layer], target)
        fast, fast_grad = _feature_grad("newton_schulz", content_features[layer], target)
        loss_diff = float((fast - exact).abs() / exact.abs())
        grad_diff = float((fast_grad - exact_grad).abs().max() / exact_grad.abs().max())
        eigh_s = _seconds("eigh", content[layer], target, device, args.repeat)
        ns_s = _seconds("newton_schulz", content[layer], target, device, args.repeat)
        print(f"| {channels:3d} | {layer} | {eigh_s:15.4f} | {ns_s:20.4f} | {loss_diff:14.1e} "
              f"| {grad_diff:19.1e} |", flush=True)
    losses.ROOT_TRACE = "auto"


if __name__ == "__main__":
    main()
