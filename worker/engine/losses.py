"""Losses of Gatys-style transfer, in two stages: statistics, then loss from statistics.

Style losses only see *sums over positions* (`Moments`), which add up across tiles; so a
tiled renderer can accumulate every tile's moments over the whole image first and back-
propagate tile by tile afterwards. Nothing here runs the network.

Every loss is normalised by its target's own size (‖G(style)‖², ‖F(content)‖²...), so a
weight means the same thing at every scale, layer and image size, and a loss value is
directly the quality measure that bench/engine.py reports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# Floor for eigenvalues inside the matrix square roots: their gradient at 0 is infinite.
_EIG_EPS = 1e-5


@dataclass
class Moments:
    """First and second moments of a feature map, as sums over `count` positions."""

    count: int
    total: torch.Tensor  # (C,) sum of feature vectors
    outer: torch.Tensor  # (C, C) sum of f fᵀ

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.count + other.count, self.total + other.total,
                       self.outer + other.outer)

    def gram(self) -> torch.Tensor:
        """Gram matrix per position, so images of different sizes compare."""
        return self.outer / self.count

    def mean(self) -> torch.Tensor:
        return self.total / self.count

    def covariance(self) -> torch.Tensor:
        mean = self.mean()
        return self.gram() - torch.outer(mean, mean)


# Positions converted to fp32 at a time by `moments`: a (512, 16384) fp32 block is 32 MiB.
_CHUNK = 16384


def moments(features: torch.Tensor) -> Moments:
    """Moments of a (1, C, H, W) feature map (or of one tile of it), always in fp32."""
    flat = features.flatten(2).squeeze(0)  # (C, HW), a view in either layout
    total, outer = _Sums.apply(flat)
    return Moments(flat.shape[1], total, outer)


class _Sums(torch.autograd.Function):
    """Σ f and Σ f fᵀ over the columns of a (C, N) matrix of any dtype, in fp32.

    `flat.float() @ flat.float().T` would keep an fp32 copy of the whole layer for the
    backward: on a GPU, twice the memory of the bf16 feature map itself. This keeps only the
    input, which the ReLU that made it keeps anyway (the same storage), and converts a block
    of positions at a time, in the forward and again in the backward.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, flat: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.save_for_backward(flat)
        channels = flat.shape[0]
        total = flat.new_zeros(channels, dtype=torch.float32)
        outer = flat.new_zeros((channels, channels), dtype=torch.float32)
        for block in flat.split(_CHUNK, dim=1):
            block = block.float()
            total += block.sum(1)
            outer.addmm_(block, block.T)
        return total, outer

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_total: torch.Tensor,
                 grad_outer: torch.Tensor) -> torch.Tensor:
        (flat,) = ctx.saved_tensors
        both = grad_outer + grad_outer.T  # d⟨A, F Fᵀ⟩/dF = (A + Aᵀ) F
        grad = torch.empty_like(flat)
        for block, out in zip(flat.split(_CHUNK, dim=1), grad.split(_CHUNK, dim=1),
                              strict=True):
            out.copy_(torch.addmm(grad_total[:, None], both, block.float()))
        return grad


# ------------------------------------------------------------------ style: Gram matrices


@dataclass
class GramTarget:
    gram: torch.Tensor
    norm: torch.Tensor  # ‖G(style)‖²


def gram_target(stats: Moments) -> GramTarget:
    gram = stats.gram()
    return GramTarget(gram, gram.square().sum())


def gram_loss(stats: Moments, target: GramTarget) -> torch.Tensor:
    """‖G − G(style)‖² / ‖G(style)‖²: 0 for a perfect match, 1 for an all-black image."""
    return (stats.gram() - target.gram).square().sum() / target.norm


# ------------------------------------------------- style: Wasserstein-2 (mean, covariance)


@dataclass
class GaussianTarget:
    mean: torch.Tensor
    cov: torch.Tensor
    cov_sqrt: torch.Tensor
    norm: torch.Tensor  # ‖μ‖² + tr Σ: the distance of the style from the zero feature


def _sqrtm(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp_min(_EIG_EPS).sqrt()) @ vectors.T


def _gaussian(stats: Moments) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance in float64.

    The covariance is a difference of two large sums (E[ffᵀ] − μμᵀ), and the loss then
    takes matrix square roots of it: in fp32 the gradient changes by parts in 10⁴ when the
    same sums are added in another order (as tiles add them), far above fp32's rounding
    of the sums themselves. C×C matrices, so float64 costs little.
    """
    count = stats.count
    mean = stats.total.double() / count
    return mean, stats.outer.double() / count - torch.outer(mean, mean)


def gaussian_target(stats: Moments) -> GaussianTarget:
    mean, cov = _gaussian(stats)
    cov = (cov + cov.T) / 2
    return GaussianTarget(mean, cov, _sqrtm(cov), mean.square().sum() + cov.trace())


def wasserstein_loss(stats: Moments, target: GaussianTarget) -> torch.Tensor:
    """Squared W2 distance between Gaussians with these moments (the Bures metric),
    normalised like `gram_loss`.

    W2² = ‖μ − μs‖² + tr Σ + tr Σs − 2 tr (Σs^½ Σ Σs^½)^½; the last trace is `root_trace`'s,
    which on a GPU never waits for the host.
    """
    mean, cov = _gaussian(stats)
    cross = target.cov_sqrt @ cov @ target.cov_sqrt
    cross = (cross + cross.T) / 2
    distance = ((mean - target.mean).square().sum() + cov.trace() + target.cov.trace()
                - 2 * root_trace(cross))
    return (distance.clamp_min(0) / target.norm).float()


# ------------------------------------------------------- tr M^½ without waiting for the host

# How `root_trace` computes: "auto" is Newton–Schulz wherever the tensors live on an
# accelerator and eigvalsh on the CPU (exact there, and 10-30x faster at C = 256..512: see
# bench/w2_sqrt.py); "eigh" or "newton_schulz" force one everywhere (tests, the bench).
ROOT_TRACE = "auto"
# Newton–Schulz on M / ‖M‖_F + NS_SHIFT·I: every eigenvalue is then at least NS_SHIFT (up to
# rounding), and an eigenvalue p grows 2.25x per iteration until it converges, so
# NS_ITERATIONS = 25 converges all of them (2.25^25·1e-8 ≈ 6). The shift also keeps the
# small negative eigenvalues that rounding gives a singular M (down to −1.3e-9·‖M‖_F
# measured on VGG features) from growing without bound, as they would unshifted.
NS_ITERATIONS = 25
NS_SHIFT = 1e-8


def root_trace(matrix: torch.Tensor) -> torch.Tensor:
    """tr M^½ of a symmetric positive semi-definite matrix (float64), differentiable.

    On an accelerator, coupled Newton–Schulz iterations (matrix products only): no host
    synchronisation, where eigvalsh waits for the solver every call. On the CPU, eigvalsh.
    """
    method = ROOT_TRACE
    if method == "auto":
        method = "eigh" if matrix.device.type == "cpu" else "newton_schulz"
    if method == "eigh":
        return torch.linalg.eigvalsh(matrix).clamp_min(_EIG_EPS).sqrt().sum()
    if method == "newton_schulz":
        return _NewtonSchulzRootTrace.apply(matrix)
    raise ValueError(f"root_trace: unknown method {method!r}")


class _NewtonSchulzRootTrace(torch.autograd.Function):
    """tr (M + δI)^½ − δ tr (M + δI)^{-½}, δ = NS_SHIFT·‖M‖_F (at least _EIG_EPS): tr M^½
    to within 0.3·√δ per eigenvalue near δ, exact for eigenvalues 0 and ≫ δ (the second term takes
    back the √δ the shift adds to each zero eigenvalue, which a singular M has hundreds of).

    Coupled Newton–Schulz: Y → (M/c + δ')^½ and Z → (M/c + δ')^{-½}, c = ‖M‖_F, a fixed
    number of iterations of three matrix products each. Its backward needs no iteration:
    the gradient is ½ (M + δI)^{-½} + ½ δ (M + δI)^{-3/2}, from Z (c and δ held fixed).

    If rounding ever left an eigenvalue below −δ (none measured), the iteration could grow
    without bound; the result is then replaced, on the device and without a sync, by
    Σ √M_ii (which bounds tr M^½ from above) with no gradient, so one bad layer of one
    iteration cannot put NaN into the image.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, matrix: torch.Tensor
                ) -> torch.Tensor:
        size = matrix.shape[0]
        eye = torch.eye(size, dtype=matrix.dtype, device=matrix.device)
        # The shift is at least _EIG_EPS, eigvalsh's floor: the gradient at 0 is infinite.
        scale = matrix.norm().clamp_min(_EIG_EPS / NS_SHIFT)
        y = matrix / scale + NS_SHIFT * eye
        z = eye
        for _ in range(NS_ITERATIONS):
            t = 1.5 * eye - 0.5 * (z @ y)
            y = y @ t
            z = t @ z
        value = (y.trace() - NS_SHIFT * z.trace()) * scale.sqrt()
        # Healthy: every eigenvalue p of ZY in [0, 1] (converged, or converging from
        # below), so Σ p² ≤ Σ p; an eigenvalue gone negative breaks that by |p| + p².
        product = z @ y
        healthy = product.isfinite().all() & (product.square().sum() <= product.trace() + 1e-3)
        fallback = matrix.diagonal().clamp_min(0).sqrt().sum()
        ctx.save_for_backward(z, scale, healthy)
        return torch.where(healthy, value, fallback)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
                 ) -> torch.Tensor:
        z, scale, healthy = ctx.saved_tensors
        inv_sqrt = z + NS_SHIFT * (z @ z @ z)  # in units of M / c
        inv_sqrt = (inv_sqrt + inv_sqrt.T) / 2
        return torch.where(healthy, grad * inv_sqrt / (2 * scale.sqrt()), 0.0)


@dataclass
class StyleLoss:
    """The weighted style loss of one scale, from each layer's moments.

    The whole-image objective and the tiled one (tiled.py) both call this, on moments of
    the whole image either way: one definition of the style term, whoever sums positions.
    """

    distance: Callable[[Moments, Any], torch.Tensor]  # gram_loss or wasserstein_loss
    targets: Sequence[Mapping[str, Any]]  # per style: layer -> GramTarget | GaussianTarget
    blend: Sequence[float]  # per style, summing to 1
    layer_weights: Mapping[str, float]
    weight: float

    def __call__(self, stats: Mapping[str, Moments]) -> torch.Tensor:
        terms = [self.weight * share * layer_weight * self.distance(stats[k], targets[k])
                 for share, targets in zip(self.blend, self.targets, strict=True)
                 for k, layer_weight in self.layer_weights.items()]
        # A CPU scalar adds to a tensor on any device.
        return sum(terms[1:], terms[0]) if terms else torch.zeros(())


# ------------------------------------------------------------------------------ copying

# Output positions compared with the style's vectors at a time: a (4096, N) block of
# similarities, N the style's vectors (at most MAX_COPY_VECTORS).
_COPY_CHUNK = 4096
MAX_COPY_VECTORS = 8192


def unit_vectors(features: torch.Tensor, max_count: int = MAX_COPY_VECTORS) -> torch.Tensor:
    """The (N, C) unit feature vectors of a (1, C, H, W) map: every k-th position when it
    has more than `max_count`, so the comparison's memory is bounded at any style size."""
    flat = features.float().flatten(2)[0].T
    step = -(-flat.shape[0] // max_count)
    return torch.nn.functional.normalize(flat[::step], dim=1)


@dataclass
class CopyLoss:
    """weight × Σ_p relu(cos(F(p), its nearest style vector) − threshold)² / positions.

    The style statistics are met as well by drawing the painting's objects (Van Gogh's
    star, Matisse's face) as by re-arranging its strokes, and the optimiser finds the
    objects: they match the deep layers at once. Only a drawn object puts near-duplicates
    of the painting's relu5_1 vectors in the picture; strokes re-arranged over a new scene
    do not come near any one of them, so this term is zero on them and leaves the style
    alone where nothing is copied. A sum over positions like the content term, so the tiled
    objective adds it up tile by tile (`positions`: the whole output's)."""

    units: torch.Tensor  # (N, C) unit relu5_1 vectors of the styles at this scale
    weight: float
    threshold: float
    positions: int

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        flat = torch.nn.functional.normalize(features.float().flatten(2)[0].T, dim=1)
        with torch.no_grad():  # which style vector is nearest: a choice, not differentiated
            nearest = torch.cat([(block @ self.units.T).argmax(dim=1)
                                 for block in flat.split(_COPY_CHUNK)])
        similarity = (flat * self.units[nearest]).sum(dim=1)
        excess = torch.relu(similarity - self.threshold)
        return self.weight * excess.square().sum() / self.positions


# -------------------------------------------------------------------- content and smoothness


@dataclass
class ContentTarget:
    features: torch.Tensor
    norm: torch.Tensor  # ‖F(content)‖²
    mask: torch.Tensor | None = None  # (1, 1, H, W): the positions that count; None: all


def content_target(features: torch.Tensor, empty_below: float = 0.0) -> ContentTarget:
    """With `empty_below` > 0, only the photo's empty positions count: those whose energy
    ‖F(p)‖² is under `empty_below` × the map's mean. A deep layer anchored there keeps the
    painting's objects out of the sky and water, and leaves the busy parts, a town's
    houses, free to take the strokes (the norm stays the whole map's, so weights compare)."""
    features = features.float()
    energy = features.square().sum(dim=-3, keepdim=True)
    mask = (energy < empty_below * energy.mean()).float() if empty_below > 0 else None
    return ContentTarget(features, energy.sum(), mask)


def content_loss(features: torch.Tensor, target: ContentTarget) -> torch.Tensor:
    """‖M ⊙ (F − F(content))‖² / ‖F(content)‖², M the target's mask (1 everywhere if none)."""
    squared = (features.float() - target.features).square()
    if target.mask is not None:
        squared = squared * target.mask
    return squared.sum() / target.norm


@dataclass
class ContentLoss:
    """Σ over content layers of weight × content_loss: local sums, which the tiled objective
    adds up tile by tile from the same targets (cropped)."""

    targets: Mapping[str, ContentTarget]
    weights: Mapping[str, float]

    def __call__(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([weight * content_loss(features[k], self.targets[k])
                            for k, weight in self.weights.items()]).sum()


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels, in units of the full 0..255 range.

    Squared, so it damps pixel noise (which L-BFGS leaves in flat regions) far more than
    edges.
    """
    height, width = image.shape[-2:]
    return tv_part(image, (height, width), (height, width))


def tv_part(region: torch.Tensor, owned: tuple[int, int], size: tuple[int, int]
            ) -> torch.Tensor:
    """The share of `tv_loss` of an image of `size` (H, W) that belongs to some pixels.

    `region` starts at the first owned pixel and holds `owned` (rows, columns) of them, plus
    the next row and column where the image has them: each pixel owns the differences to
    its right and lower neighbours. Normalised by the whole image's counts, so the parts of
    disjoint tiles add up to `tv_loss` of the whole.
    """
    rows, cols = owned
    height, width = size
    dx = region[..., :rows, 1:] - region[..., :rows, :-1]
    dy = region[..., 1:, :cols] - region[..., :-1, :cols]
    return (dx.square().sum() / (height * (width - 1))
            + dy.square().sum() / ((height - 1) * width)) / 255.0**2
