"""The AMP emulation casts each weight once per autocast region, as CUDA autocast caches it."""

import torch

from sa_profiler.engine.amp import AutocastEmulation

MiB = 2**20


def test_weight_cast_is_cached_within_a_region_and_dropped_after():
    amp = AutocastEmulation(torch.float16)
    weight = torch.nn.Parameter(torch.empty(256, 256, device="meta"))
    activation = torch.empty(8, 256, device="meta", requires_grad=True) * 2  # not a leaf: never cached
    linear = torch.nn.functional.linear
    with amp.region():
        (a1, w1), _ = amp.cast(linear, (activation, weight), {})
        (a2, w2), _ = amp.cast(linear, (activation, weight), {})
        assert w1.dtype == torch.float16 and w1 is w2
        assert a1.dtype == torch.float16 and a1 is not a2
        assert len(amp.cache) == 1
    assert amp.cache == {}
    (_, w3), _ = amp.cast(linear, (activation, weight), {})
    assert w3 is weight  # autocast is off outside the region


def test_a_weight_used_three_times_costs_one_cast():
    """Simulated AMP step of two layers applied three times: one float16 copy of each weight
    (16 MiB), not three (without the cache the four extra copies add 64 MiB)."""
    from sa_profiler.targets import gpus
    from sa_profiler.models.fit import run_step

    class Thrice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4096, 2048, bias=False)
            self.back = torch.nn.Linear(2048, 4096, bias=False)

        def forward(self, x):
            return self.back(self.lin(self.back(self.lin(self.back(self.lin(x))))))

    class Once(Thrice):
        def forward(self, x):
            return self.back(self.lin(x))

    gpu = gpus.lookup("h100")
    thrice = run_step(Thrice, (4096,), 1, gpu, optimizer="sgd", amp="fp16")
    once = run_step(Once, (4096,), 1, gpu, optimizer="sgd", amp="fp16")
    assert thrice.status == once.status == "ok"
    # the same casts; what grows is tiny activations and one float16 sum of a weight's three
    # gradients (16 MiB)
    assert thrice.peak_total - once.peak_total <= 17 * MiB, (thrice.peak_total, once.peak_total)


def _softmax_ops(dtype):
    """The aten ops, with dtypes, of a softmax forward and backward under the emulated autocast."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from sa_profiler.attention.routing import AttentionRouting
    from sa_profiler.attention import backends

    seen = []

    class Log(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            seen.append((func.overloadpacket.__name__, out.dtype if isinstance(out, torch.Tensor) else None))
            return out

    x = torch.empty(2, 16, 16, device="meta", dtype=dtype, requires_grad=True)
    emulation = AutocastEmulation(dtype)
    routing = AttentionRouting(backends.CPU)
    routing.autocast = emulation
    with Log():
        with routing, emulation.region():
            y = torch.nn.functional.softmax(x, dim=-1)
        y.sum().backward()
    return seen, y, x.grad


def test_fp16_softmax_runs_half_to_float_as_cuda_does():
    # SoftMax.cpp: a CUDA Half input with dtype=float (autocast's fp32_set_opt_dtype) runs
    # _softmax(x, dim, half_to_float=True): no float32 copy of the input, a float16 gradient
    # (reports/validation/timeline-zoo-13.csv, an H100 step of the SAGAN generator in fp16)
    ops, y, grad = _softmax_ops(torch.float16)
    assert y.dtype == torch.float32 and grad.dtype == torch.float16
    assert ops[0] == ("_softmax", torch.float32)
    assert ("_softmax_backward_data", torch.float16) in ops


def test_bf16_softmax_casts_first():
    # bfloat16 has no half_to_float kernel: the input is cast, the gradient comes out in float32
    # before the cast's backward (timeline-zoo-14.csv, the same step in bf16)
    ops, y, grad = _softmax_ops(torch.bfloat16)
    assert ops[0] == ("_to_copy", torch.float32) and ops[1] == ("_softmax", torch.float32)
    assert ("_softmax_backward_data", torch.float32) in ops and grad.dtype == torch.bfloat16
