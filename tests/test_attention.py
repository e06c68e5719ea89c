"""The implementations against a verbatim copy of the classic layer (tests/classic_sagan.py)."""

import pytest
import torch
from torch import nn

from sa_profiler.attention import (
    BackendUnavailable, ChunkedSelfAttention, ReferenceSelfAttention, SDPASelfAttention, build, convert,
)
from classic_sagan import Self_Attn

# name -> constructor options; every backend that runs on CPU, every layout, chunk edge cases
VARIANTS = {
    "reference": ("reference", {}),
    "sdpa-auto": ("sdpa", {}),
    "sdpa-math": ("sdpa", {"backend": "math"}),
    "sdpa-math-split": ("sdpa", {"backend": "math", "layout": "split"}),
    "sdpa-math-pad": ("sdpa", {"backend": "math", "layout": "pad"}),
    "sdpa-flash": ("sdpa", {"backend": "flash"}),
    "sdpa-flash-pad": ("sdpa", {"backend": "flash", "layout": "pad"}),
    "chunked": ("chunked", {}),
    "chunked-7": ("chunked", {"chunk": 7}),
    "chunked-7-ckpt": ("chunked", {"chunk": 7, "checkpoint": True}),
}
SHAPES = [(1, 8, 4, 4), (3, 8, 3, 5), (3, 12, 4, 4), (1, 64, 1, 1), (3, 64, 6, 4), (1, 16, 5, 5)]


def _pair(name, shape, dtype):
    impl, opts = VARIANTS[name]
    torch.manual_seed(0)
    classic = Self_Attn(shape[1], None).to(dtype)
    with torch.no_grad():
        classic.gamma.fill_(0.7)  # gamma = 0 would hide the attention from the output
    layer = build(impl, shape[1], **opts).to(dtype)
    layer.load_state_dict(classic.state_dict())
    return classic, layer


def _run(module, x, g):
    x = x.detach().clone().requires_grad_(True)
    out = module(x)[0]
    (out * g).sum().backward()
    return out.detach(), [x.grad] + [p.grad for p in module.parameters()]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"])
def test_matches_classic_outputs_and_gradients(name, shape, dtype, tol):
    classic, layer = _pair(name, shape, dtype)
    x = torch.randn(shape, dtype=dtype)
    g = torch.randn(shape, dtype=dtype)
    ref_out, ref_grads = _run(classic, x, g)
    out, grads = _run(layer, x, g)
    torch.testing.assert_close(out, ref_out, rtol=tol, atol=tol)
    assert len(grads) == len(ref_grads) == 8  # input + 3 convs x (weight, bias) + gamma
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


# bfloat16 keeps 8 bits of mantissa: outputs agree with float64 to a few parts in 100
BF16_TOL = 5e-2


@pytest.mark.parametrize("name", VARIANTS)
def test_bfloat16_within_documented_tolerance(name):
    classic, layer = _pair(name, (2, 16, 4, 4), torch.float64)
    x = torch.randn(2, 16, 4, 4, dtype=torch.float64)
    want = classic(x)[0]
    got = layer.to(torch.bfloat16)(x.to(torch.bfloat16))[0].double()
    torch.testing.assert_close(got, want, rtol=BF16_TOL, atol=BF16_TOL)


def test_reference_returns_attention_map_like_classic():
    classic, layer = _pair("reference", (2, 16, 3, 4), torch.float64)
    x = torch.randn(2, 16, 3, 4, dtype=torch.float64)
    attn = layer(x)[1]
    assert attn.shape == (2, 12, 12)
    torch.testing.assert_close(attn, classic(x)[1])
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 12, dtype=torch.float64))


@pytest.mark.parametrize("name", [n for n in VARIANTS if n != "reference"])
def test_efficient_layers_return_no_map(name):
    _, layer = _pair(name, (1, 8, 4, 4), torch.float32)
    assert layer(torch.randn(1, 8, 4, 4))[1] is None


@pytest.mark.parametrize("name", VARIANTS)
def test_attention_rows_match_reference_map(name):
    classic, layer = _pair(name, (2, 16, 4, 5), torch.float64)
    x = torch.randn(2, 16, 4, 5, dtype=torch.float64)
    full = classic(x)[1]
    torch.testing.assert_close(layer.attention_rows(x, [0, 7, 19]), full[:, [0, 7, 19]])
    torch.testing.assert_close(layer.attention_rows(x, [(1, 2), (3, 4)]), full[:, [7, 19]])
    with pytest.raises(IndexError, match="outside"):
        layer.attention_rows(x, [(4, 0)])


@pytest.mark.parametrize("impl", ["reference", "sdpa", "chunked"])
def test_state_dict_round_trip(impl):
    classic = Self_Attn(32, None)
    with torch.no_grad():
        for p in classic.parameters():
            p.normal_()
    layer = build(impl, 32)
    layer.load_state_dict(classic.state_dict())
    back = Self_Attn(32, None)
    back.load_state_dict(layer.state_dict())
    for k, v in classic.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.attn = Self_Attn(c, None)

    def forward(self, x):
        return self.attn(torch.relu(self.conv(x)))[0]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.stages = nn.Sequential(Block(16), nn.Sequential(Block(16)))  # attention two levels deep
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


@pytest.mark.parametrize("impl,opts", [("sdpa", {}), ("chunked", {"chunk": 5}), ("reference", {})])
def test_convert_nested_model(impl, opts):
    torch.manual_seed(0)
    net = Net().double().eval()
    for m in net.modules():
        if isinstance(m, Self_Attn):
            with torch.no_grad():
                m.gamma.fill_(0.5)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    before = net(x)
    assert convert(net, impl, **opts) == 2
    kinds = [type(m).__name__ for m in net.modules()]
    assert "Self_Attn" not in kinds
    assert sum(getattr(m, "impl_name", None) == impl for m in net.modules()) == 2
    assert all(p.dtype == torch.float64 for p in net.parameters())
    assert not net.training
    torch.testing.assert_close(net(x), before, rtol=1e-10, atol=1e-10)


def test_convert_without_attention_returns_zero_and_leaves_model_alone():
    net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 1))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert convert(net, "sdpa") == 0
    assert [type(m) for m in net] == [nn.Conv2d, nn.ReLU, nn.Conv2d]
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())


def test_convert_unknown_impl():
    with pytest.raises(ValueError, match="unknown implementation 'fast'; expected one of reference, sdpa, chunked, pooled"):
        convert(Net(), "fast")


@pytest.mark.parametrize("cls", [ReferenceSelfAttention, SDPASelfAttention, ChunkedSelfAttention])
def test_few_channels_need_qk_channels(cls):
    with pytest.raises(ValueError, match=r"in_dim=4 gives query/key channels 4 // 8 = 0; pass qk_channels"):
        cls(4)
    layer = cls(4, qk_channels=2)
    assert layer(torch.randn(1, 4, 3, 3))[0].shape == (1, 4, 3, 3)


@pytest.mark.parametrize("cls", [ReferenceSelfAttention, SDPASelfAttention, ChunkedSelfAttention])
def test_bad_inputs_are_named(cls):
    layer = cls(16)
    with pytest.raises(ValueError, match=r"expects a 4-D input B x C x H x W, got 3-D shape \(16, 4, 4\)"):
        layer(torch.randn(16, 4, 4))
    with pytest.raises(ValueError, match="was built for 16 channels, got input with 8"):
        layer(torch.randn(1, 8, 4, 4))


@pytest.mark.parametrize("backend,reason", [
    ("efficient", "the efficient backend exists only on CUDA"),
    ("cudnn", "the cudnn backend exists only on CUDA"),
])
def test_forced_backend_that_cannot_run(backend, reason):
    layer = SDPASelfAttention(16, backend=backend)
    with pytest.raises(BackendUnavailable, match=f"SDPA backend '{backend}' cannot run this input on CPU: {reason}"):
        layer(torch.randn(1, 16, 4, 4))


def test_flash_with_uneven_channels_uses_padding():
    layer = SDPASelfAttention(12, backend="flash")
    assert layer.resolve(torch.float32, __import__("sa_profiler").attention.backends.CPU, False) == ("flash", "split")
    layer = SDPASelfAttention(12, qk_channels=5, backend="flash")
    assert layer.resolve(torch.float32, __import__("sa_profiler").attention.backends.CPU, False) == ("flash", "pad")


def test_unknown_options():
    with pytest.raises(ValueError, match="unknown SDPA backend 'fast'"):
        SDPASelfAttention(16, backend="fast")
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        ChunkedSelfAttention(16, chunk=0)
