"""engine/timing.py op by op: the kind, precision, FLOPs and bytes each op is costed by, the
cost formula with constants chosen so every term is visible, the defaults for what the fitted
constants do not name, and the texts that say how a time was obtained (tests written against
surviving mutants)."""

import os
import subprocess
import sys

import pytest
import torch

from sa_profiler.engine import Workload, card_keys, timing
from sa_profiler.engine import timing_constants as fitted
from sa_profiler.engine.timing import Constants, Op, describe, host_calls, kind_of, op_seconds, peak_flops
from sa_profiler.engine.timing import step_seconds

aten = torch.ops.aten
H100, T4 = card_keys.resolve("h100"), card_keys.resolve("t4")


@pytest.mark.parametrize("name, precision, kind", [
    ("mm", "fp16", "gemm fp16"), ("mm", "bf16", "gemm bf16"), ("mm", "fp32", "gemm fp32"), ("bmm", "fp64", "gemm fp32"),
    ("convolution_backward", "fp64", "gemm fp32"),
    ("_efficient_attention_forward", "fp16", "efficient forward half"),
    ("_efficient_attention_forward", "bf16", "efficient forward half"),
    ("_efficient_attention_forward", "fp32", "efficient forward fp32"),
    ("_scaled_dot_product_flash_attention_backward", "fp64", "flash backward fp32"),
    ("_scaled_dot_product_cudnn_attention", "fp16", "cudnn forward half"),
    ("_softmax", "fp64", "softmax"), ("view", "fp16", "view"), ("add", "fp64", "pointwise")])
def test_kind_of(name, precision, kind):
    assert kind_of(name, precision) == kind


def test_peak_rate_by_precision():
    assert peak_flops(H100, "fp64") == peak_flops(H100, "fp32") == H100.fp32_flops
    assert peak_flops(H100, "fp16") == peak_flops(H100, "bf16") == H100.fp16_flops


def test_describe_a_gemm():
    a, b = torch.ones(8, 16, dtype=torch.float16), torch.ones(16, 4, dtype=torch.float16)
    out = a @ b
    assert describe(aten.mm.default, (a, b), {}, out) == Op("gemm fp16", "fp16", 2 * 8 * 16 * 4,
                                                            (8 * 16 + 16 * 4 + 8 * 4) * 2, False)


def test_describe_counts_tensors_in_kwargs():
    """`out=` tensors are read from kwargs: a, b and out, and the result (out again)."""
    a, b, c = torch.ones(3, 5), torch.ones(3, 5), torch.empty(3, 5)
    op = describe(aten.add.out, (a, b), {"out": c}, c)
    assert op == Op("pointwise", "fp32", 0, 4 * 15 * 4, False)


def test_describe_precision_from_the_output_then_the_inputs():
    """A pointwise op's precision is its output's dtype; with no tensor output, its inputs';
    with no tensors at all, fp32. A dtype with no peak rate of its own (integers) counts as fp32."""
    half = torch.ones(2, 3, dtype=torch.float16)
    ones = aten.ones.default([2, 3], dtype=torch.bfloat16)
    assert describe(aten.ones.default, ([2, 3],), {"dtype": torch.bfloat16}, ones) == Op("pointwise", "bf16", 0, 12)
    assert describe(aten.sum.default, (half,), {}, half.sum()).precision == "fp16"
    assert describe(aten._assert_scalar.default, (True, "x"), {}, None) == Op("pointwise", "fp32", 0, 0, False)
    assert describe(aten._local_scalar_dense.default, (half[0, 0],), {}, 1.0) == Op("pointwise", "fp16", 0, 2)
    ints = torch.ones(4, dtype=torch.int64)
    assert describe(aten.add.Tensor, (ints, ints), {}, ints + ints) == Op("pointwise", "fp32", 0, 3 * 32)
    assert describe(aten.add.Tensor, (half.double(), half.double()), {}, half.double()).precision == "fp64"


def test_describe_gemm_precision_from_the_first_input():
    a = torch.ones(4, 4, dtype=torch.float64)
    assert describe(aten.mm.default, (a, a), {}, a @ a).kind == "gemm fp32"
    assert describe(aten.mm.default, (a, a), {}, a @ a).precision == "fp64"


def test_views_cost_no_flops_or_bytes():
    x = torch.ones(64, 64, dtype=torch.float16)
    assert describe(aten.view.default, (x, [4096]), {}, x.view(4096)) == Op("view", "fp16", 0, 0, False)
    assert describe(aten.t.default, (x,), {}, x.t()) == Op("view", "fp16", 0, 0, False)


def test_a_flop_formula_that_refuses_the_arguments_counts_zero():
    """convolution's formula needs stride, padding, ...: called with two arguments it raises."""
    x, w = torch.ones(1, 2, 3, 3), torch.ones(4, 2, 1, 1)
    out = torch.ones(1, 4, 3, 3)
    op = describe(aten.convolution.default, (x, w), {}, out)
    assert op == Op("gemm fp32", "fp32", 0, (18 + 8 + 36) * 4, False)


def test_ops_without_a_flop_formula_count_zero():
    x = torch.ones(3, 5)
    assert describe(aten.relu.default, (x,), {}, x.relu()).flops == 0
    assert describe(aten.mul.Tensor, (x, x), {}, x * x).flops == 0


def test_in_backward_inside_and_outside():
    seen = []
    x = torch.ones(3, requires_grad=True)
    y = x * 2
    y.register_hook(lambda g: seen.append(timing._in_backward()))
    assert not timing._in_backward()
    y.sum().backward()
    assert seen == [True]


def test_in_backward_of_the_first_backward_in_a_process():
    """The autograd engine numbers graph tasks from 0: the first backward of a process is one too."""
    code = ("import torch\nfrom sa_profiler.engine import timing\nseen = []\nx = torch.ones(3, requires_grad=True)\n"
            "y = x * 2\ny.register_hook(lambda g: seen.append(timing._in_backward()))\ny.sum().backward()\n"
            "print(seen)\n")
    assert not timing._in_backward()  # in this process too (mutmut maps tests to what they call)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[True]"


def test_in_backward_without_torchs_task_id(monkeypatch):
    """A torch without `_current_graph_task_id`: every op counts as forward."""
    monkeypatch.delattr(torch._C, "_current_graph_task_id")
    assert timing._in_backward() is False


def _constants(**kw):
    base = dict(launch_s={"forward gemm": 1e-5, "forward view": 2e-6, "backward pointwise": 3e-6},
                step_s={"train": 1e-3}, host_s={"checkpointed chunk": 5e-4},
                efficiency={"gemm fp16": 0.5, "flash forward half": 0.25, "flash backward half": 0.2},
                bandwidth_efficiency={"softmax": 1.0, "*": 0.5})
    base.update(kw)
    return Constants(**base)


def test_op_seconds_is_launch_plus_the_slower_of_compute_and_memory():
    c = _constants()
    gemm = Op("gemm fp16", "fp16", 10**12, 10**9)
    compute, memory = 10**12 / (0.5 * H100.fp16_flops), 10**9 / (0.5 * H100.bandwidth)
    assert compute > memory
    assert op_seconds(gemm, H100, c) == pytest.approx(1e-5 + compute, rel=1e-12)
    wide = Op("gemm fp16", "fp16", 10**6, 10**10)
    assert op_seconds(wide, H100, c) == pytest.approx(1e-5 + 10**10 / (0.5 * H100.bandwidth), rel=1e-12)
    # no fitted launch cost for the group: none is added
    assert op_seconds(Op("softmax", "fp32", 0, 10**9), H100, c) == pytest.approx(10**9 / H100.bandwidth, rel=1e-12)
    assert op_seconds(Op("pointwise", "fp32", 0, 10**9, True), H100, c) == pytest.approx(
        3e-6 + 10**9 / (0.5 * H100.bandwidth), rel=1e-12)


def test_a_view_costs_its_launch_whatever_its_size():
    c = _constants()
    assert op_seconds(Op("view", "fp32", 10**12, 10**12), H100, c) == 2e-6
    assert op_seconds(Op("view", "fp32", 0, 0, True), H100, c) == 0.0


def test_flop_share_for_kinds_without_a_fitted_efficiency():
    c = _constants(efficiency={"gemm fp16": 0.5, "flash forward half": 0.25, "flash backward half": 0.2,
                               "efficient forward half": 0.1})
    assert c.flop_share("gemm fp16") == 0.5
    assert c.flop_share("flash forward fp32") == 0.2  # the lowest of its family (flash), not of all (0.1)
    assert c.flop_share("gemm bf16") == 0.5
    assert c.flop_share("cudnn forward half") == 0.1  # no cudnn at all: the lowest of every kind
    assert _constants(efficiency={}).flop_share("gemm fp16") == 1.0
    assert c.bandwidth_share("softmax") == 1.0 and c.bandwidth_share("gemm fp16") == 0.5


def test_step_seconds_adds_step_host_and_ops():
    c = _constants()
    w = Workload("chunked", 1, 16, 25, 41, "fp16", "train", "h100", {"checkpoint": True})
    ops = [Op("gemm fp16", "fp16", 10**12, 10**9), Op("view", "fp16", 0, 0)]
    expected = 1e-3 + 2 * 5e-4 + op_seconds(ops[0], H100, c) + 2e-6
    assert step_seconds(ops, w, H100, c) == pytest.approx(expected, rel=1e-12)
    # a mode and a host call with no fitted cost add nothing
    fwd = Workload("sdpa", 1, 16, 8, 8, "fp16", "forward", "h100", {"backend": "flash"})
    assert host_calls(fwd) == {"forced sdpa backend": 1}
    assert step_seconds([], fwd, H100, c) == 0.0
    timer = timing.StepTimer(H100, ops)
    assert timer.seconds(w, c) == pytest.approx(expected, rel=1e-12)
    assert timer.seconds(w) == step_seconds(ops, w, H100, Constants.fitted())
    assert timer.seconds(w) != timer.seconds(w, c)


def test_checkpointed_chunks_default_to_1024_tokens():
    """1025 tokens with the default chunk of 1024: two chunks."""
    w = Workload("chunked", 1, 16, 25, 41, "fp16", "train", "h100", {"checkpoint": True})
    assert host_calls(w) == {"checkpointed chunk": 2}
    assert host_calls(Workload("chunked", 1, 16, 25, 41, "fp16", "train", "h100",
                               {"checkpoint": True, "chunk": 205})) == {"checkpointed chunk": 5}


def test_method_and_assumption_texts():
    h = fitted.HELDOUT
    assert timing.method(H100) == (f"estimate: per-op model fitted on {fitted.CARD} measurements; typical error "
                                   f"x{h['typical_factor']:.2f} on held-out {fitted.CARD} workloads")
    assert timing.method(T4) == (f"estimate: per-op model fitted on {fitted.CARD} measurements, scaled to Tesla T4 by "
                                 "its peak rates and bandwidth (unmeasured); typical error "
                                 f"x{h['typical_factor']:.2f} on held-out {fitted.CARD} workloads")
    base = (f"times are estimates: per-op efficiencies and launch costs fitted on {fitted.CARD} measurements "
            f"(python -m sa_profiler.validation.timing_fit); on {h['rows']} held-out workloads measured / estimated has a "
            f"median of {h['median_ratio']:.2f} and a typical error of x{h['typical_factor']:.2f} "
            f"(x{h['p90_factor']:.2f} at the 90th percentile)")
    assert timing.assumption(H100) == base
    assert timing.assumption(T4) == base + ("; on Tesla T4 they are scaled by its peak rates and bandwidth, which no "
                                            "measurement has checked")
    assert "352 held-out" in base and "median of 1.20" in base  # the committed check (timing_constants.py)
    assert timing.typical_factor() == 1.231
    assert not timing._is_fitted_card(None)
