"""The GPU's reduced-precision path, exercised on the CPU (precision "bf16" runs it here):
what the backward keeps in memory, and that the lean pieces compute what they replace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch.nn import functional as F

from shared.settings import get_settings
from shared.spec import STYLE_LAYERS, RenderParams
from tests.engine.patterns import scene, stripes
from worker.engine import losses
from worker.engine.device import conv_dtype, memory_format
from worker.engine.images import to_tensor
from worker.engine.optimize import LBFGS, Adam
from worker.engine.render import RenderSpec, render
from worker.engine.vgg import _MaxPool, load_vgg


@pytest.fixture
def gpu_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("STYLEFARM_PRECISION", "bf16")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def _saved_tensors(objective_of_image: torch.Tensor, body) -> list[torch.Tensor]:
    """Every tensor autograd keeps for the backward while `body(x)` builds its loss."""
    saved: list[torch.Tensor] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        body(objective_of_image.requires_grad_(True))
    return saved


def _style_loss(x: torch.Tensor, stats_of=losses.moments) -> torch.Tensor:
    model = load_vgg("max", "cpu", "relu5_1")
    features = model(x, frozenset(STYLE_LAYERS))
    return sum(stats_of(features[k]).outer.sum() for k in STYLE_LAYERS)


def _naive_moments(features: torch.Tensor) -> losses.Moments:
    """What losses.moments did before: an fp32 copy of the layer, kept for the backward."""
    flat = features.float().flatten(2).squeeze(0)
    return losses.Moments(flat.shape[1], flat.sum(1), flat @ flat.T)


def _fp32_style_layer_copies(saved: list[torch.Tensor], x: torch.Tensor) -> int:
    model = load_vgg("max", "cpu", "relu5_1")
    with torch.no_grad():
        shapes = {f.numel() for f in model(x.detach(), frozenset(STYLE_LAYERS)).values()}
    return len({t.untyped_storage().data_ptr() for t in saved
                if t.dtype == torch.float32 and t.numel() in shapes})


def test_bf16_objective_keeps_no_fp32_copy_of_the_style_layers(gpu_path: None) -> None:
    x = to_tensor(scene(96, 64)).contiguous(memory_format=torch.channels_last)
    saved = _saved_tensors(x.clone(), _style_loss)
    assert _fp32_style_layer_copies(saved, x) == 0
    assert not [t for t in saved if t.dtype == torch.int64]  # no max-pool indices
    # Every feature map kept is bf16: the network ran in the GPU's arithmetic.
    assert {t.dtype for t in saved if t.dim() == 4 and t.shape[1] > 3} == {torch.bfloat16}
    # The accounting sees a copy where there is one: the old statistics kept five.
    naive = _saved_tensors(x.clone(), lambda v: _style_loss(v, _naive_moments))
    assert _fp32_style_layer_copies(naive, x) == len(STYLE_LAYERS)


def test_lean_path_keeps_less_than_the_plain_one(gpu_path: None) -> None:
    """Bytes of activations held for the backward (each storage once; weights aside)."""
    x = to_tensor(scene(96, 64)).contiguous(memory_format=torch.channels_last)

    def held(saved: list[torch.Tensor]) -> int:
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                    for t in saved if t.shape[-2:] != (3, 3)}
        return sum(storages.values())

    lean = held(_saved_tensors(x.clone(), _style_loss))
    plain = held(_saved_tensors(x.clone(), lambda v: _style_loss(v, _naive_moments)))
    assert lean < 0.8 * plain


def test_statistics_and_their_gradient_equal_the_plain_computation() -> None:
    torch.manual_seed(0)
    features = torch.randn(1, 32, 150, 130).relu()  # more positions than one block
    a, b = features.clone().requires_grad_(True), features.clone().requires_grad_(True)
    weights = torch.randn(32, 32), torch.randn(32)
    lean, plain = losses.moments(a), _naive_moments(b)
    assert torch.allclose(lean.outer, plain.outer, rtol=1e-5, atol=1e-3)
    assert torch.allclose(lean.total, plain.total, rtol=1e-5, atol=1e-3)
    for stats in (lean, plain):
        ((stats.outer * weights[0]).sum() + (stats.total * weights[1]).sum()).backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-4 * b.grad.abs().max())


@pytest.mark.parametrize("size", [(8, 8), (9, 7), (1, 5)])
def test_max_pool_without_indices_has_the_same_gradient(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 4, *size)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    grad = torch.randn_like(F.max_pool2d(x, 2, ceil_mode=True))
    out = _MaxPool.apply(a)
    assert torch.equal(out, F.max_pool2d(b, 2, ceil_mode=True))
    out.backward(grad)
    F.max_pool2d(b, 2, ceil_mode=True).backward(grad)
    assert torch.equal(a.grad, b.grad)


def test_first_convolution_sees_the_pixels_in_fp32(gpu_path: None) -> None:
    model = load_vgg("max", "cpu", "relu5_1")
    x = to_tensor(stripes(40, 32))
    x = (x + torch.linspace(0, 0.9, x.numel()).view_as(x)).contiguous(
        memory_format=torch.channels_last)  # sub-level detail bf16 would round away
    with torch.no_grad():
        got = model(x, frozenset({"relu1_1"}))["relu1_1"]
        conv = model.convs["block1_conv1"]
        exact = F.relu(conv(x)).to(torch.bfloat16)
        rounded = F.relu(conv(x.to(torch.bfloat16).float())).to(torch.bfloat16)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, exact)
    assert not torch.equal(got, rounded)


def test_precision_setting_picks_the_convolution_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    for value, expected in (("auto", None), ("fp32", None), ("bf16", torch.bfloat16)):
        monkeypatch.setenv("STYLEFARM_PRECISION", value)
        get_settings.cache_clear()
        assert conv_dtype(cpu) == expected
    # A GPU older than Ampere only emulates bf16: it runs fp32, not unscaled fp16.
    monkeypatch.setenv("STYLEFARM_PRECISION", "auto")
    get_settings.cache_clear()
    for capability, expected in (((7, 0), None), ((8, 0), torch.bfloat16)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _d, c=capability: c)
        assert conv_dtype(torch.device("cuda")) == expected
    monkeypatch.setenv("STYLEFARM_PRECISION", "fp16")
    get_settings.cache_clear()
    with pytest.raises(ValueError, match="STYLEFARM_PRECISION"):
        conv_dtype(cpu)
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.mark.parametrize("optimizer", [LBFGS(), Adam()], ids=["lbfgs", "adam"])
def test_optimizer_state_keeps_the_images_layout(optimizer: LBFGS | Adam) -> None:
    """A gradient in another layout (TV's path makes one) is brought to the image's."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 16, 24).contiguous(memory_format=torch.channels_last)
    for _ in range(3):
        optimizer.step(x, torch.randn(1, 3, 16, 24))  # contiguous
    state = optimizer.state
    buffers = [state.m, state.v, state.ema] if isinstance(optimizer, Adam) else [
        *state.s, *state.y, state.prev_x, state.prev_grad]
    assert buffers and all(b.stride() == x.stride() for b in buffers)


def test_render_runs_the_gpu_path_on_the_cpu(gpu_path: None) -> None:
    """bf16, channels_last, two scales, TV on: a picture of the asked size, near fp32's."""
    params = RenderParams.from_dict({"size": 64, "min_size": 48, "iterations": [6],
                                     "tv_weight": 1.0})
    assert memory_format(torch.device("cpu")) == torch.channels_last
    spec = RenderSpec(scene(64, 48), [stripes(64, 64)], params)
    lean = render(spec, device="cpu")
    get_settings.cache_clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STYLEFARM_PRECISION", "fp32")
        get_settings.cache_clear()
        plain = render(spec, device="cpu")
    get_settings.cache_clear()
    assert lean.size == plain.size == (64, 48)
    diff = (to_tensor(lean) - to_tensor(plain)).abs()
    assert float(diff.mean()) < 8  # levels of 0..255: the same picture, bf16's rounding apart
