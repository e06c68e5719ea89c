"""Each CUDA rule against the per-op measurements it was derived from (an H100, torch 2.11).

reports/validation/h100-probe-ops.csv holds, for every aten op of a few training and forward
steps, what the op allocated that no dispatch mode sees (its peak over what it left behind,
plus what it kept beyond its outputs). Here the rule of that op, given inputs of the same
shapes, dtypes and strides on the meta device, must predict the same bytes.
"""

import ast
from types import SimpleNamespace
from pathlib import Path

import pandas as pd
import pytest
import torch

from sa_profiler.targets import gpus
from sa_profiler.engine.allocator import round_size
from sa_profiler.engine.rules import RULES, CudaRules, _flash_splits, is_dense

PROBE = Path(__file__).parent.parent / "reports" / "validation" / "h100-probe-ops.csv"
# the memory-efficient backward across value head sizes 32..512, sequence lengths and batches
PROBE_EFFICIENT = PROBE.with_name("h100-probe-efficient.csv")
# ops whose hidden allocations no rule models: cuDNN convolution workspaces
# scratch of a few hundred bytes to 2 MiB, outside the attention peak (see README)
UNMODELLED = {"convolution", "convolution_backward"}


def _tensor(spec: str):
    shape, dtype, stride, _, device = spec.rsplit(":", 4)
    if device != "cuda":
        return torch.empty((), dtype=torch.int64)
    return torch.empty_strided(ast.literal_eval(shape), ast.literal_eval(stride), dtype=getattr(torch, dtype), device="meta")


def _probe_rows(path, ops):
    data = pd.read_csv(path)
    data = data[data.op.isin(ops)]
    return [pytest.param(r, id=f"{r.op}-{r.key}-{r.index}") for r in data.itertuples(index=False)]


def _predict(row):
    args = [_tensor(s) for s in row.inputs.split(";")]
    # outputs are logged as shape:dtype:stride:device
    outs = [_tensor(":c:".join(s.rsplit(":", 1))) for s in str(getattr(row, "outputs", "") or "").split(";")
            if s and s != "nan"]
    rules = CudaRules(gpus.lookup("h100"))
    temps = rules.transients(SimpleNamespace(overloadpacket=SimpleNamespace(__name__=row.op)), args, {}, outs)
    return sum(round_size(b) for b, *_ in temps), temps


# sum/mean: their dims are not logged; tests/test_reduce.py re-dispatches each with them
@pytest.mark.parametrize("row", _probe_rows(PROBE, [op for op in RULES if op not in ("sum", "mean")]))
def test_rule_predicts_measured_hidden_bytes(row):
    predicted, temps = _predict(row)
    assert predicted == row.hidden_transient + max(row.hidden_kept, 0), temps


@pytest.mark.parametrize("row", _probe_rows(PROBE_EFFICIENT, ["_scaled_dot_product_efficient_attention",
                                                          "_scaled_dot_product_efficient_attention_backward"]))
def test_efficient_rules_across_head_sizes(row):
    """Computed from the kernels' source (engine/mem_eff.py), not fitted: the grad_out copy, delta
    and `workspace_size()` of the kernel the H100 runs, or the fp32 delta product where that is
    larger. Each row to the 512-byte block, except where the caching allocator handed out a
    cached large block whole (up to 1 MiB more per block, CUDACachingAllocator.cpp
    `should_split`), which the full-step simulation models and a per-op sum cannot."""
    predicted, temps = _predict(row)
    measured = row.hidden_transient + max(row.hidden_kept, 0)
    assert predicted in (row.hidden_transient, measured) or 0 < row.hidden_transient - predicted <= 2**20 * len(temps), temps


def test_efficient_rules_mostly_to_the_byte():
    rows = _probe_rows(PROBE_EFFICIENT, ["_scaled_dot_product_efficient_attention_backward"])
    exact = [_predict(p.values[0])[0] in (p.values[0].hidden_transient, p.values[0].hidden_transient + p.values[0].hidden_kept)
             for p in rows]
    assert len(rows) == 70 and sum(exact) >= 63


# whole-model training steps of the examples and the zoo (benchmarks/validate_fit_cuda.py --probe):
# only the ops that allocated hidden bytes
PROBE_FIT = PROBE.with_name("probe-fit-h100.csv")


def _fit_rows(ops):
    data = pd.read_csv(PROBE_FIT)
    data = data[data.op.isin(ops)]
    return [pytest.param(r, id=f"{r.op}-{r.model.rsplit('/', 1)[-1]}-{r.amp if isinstance(r.amp, str) else 'fp32'}-{r.index}")
            for r in data.itertuples(index=False)]


# (the reductions' dims are arguments the probe does not log: tests/test_reduce.py re-dispatches
# each measured sum/mean with them)
@pytest.mark.parametrize("row", _fit_rows([op for op in RULES if op not in ("sum", "mean")]))
def test_rules_on_whole_models(row):
    """The same rules on the library models' own ops (ViT, UNet, nn.MultiheadAttention, BERT,
    ResNet-50 in fp32 and AMP): each measured hidden byte count to the block, or at most the
    1 MiB per allocation the caching allocator may hand out whole (see above)."""
    predicted, temps = _predict(row)
    measured = row.hidden_transient + max(row.hidden_kept, 0)
    assert predicted in (row.hidden_transient, measured) or 0 < row.hidden_transient - predicted <= 2**20 * len(temps), temps


def test_every_rule_is_pinned_by_a_measurement():
    seen = set(pd.read_csv(PROBE).op) | set(pd.read_csv(PROBE_FIT).op)
    assert set(RULES) - {"_scaled_dot_product_flash_attention"} <= seen
    assert not (UNMODELLED & set(RULES))


def test_flash_split_kv_heuristic():
    # flash_api.cpp num_splits_heuristic; B1 H8 L1024 D64 on an H100 (132 SMs) splits in two
    assert _flash_splits(1 * 8 * 16, 2 * 132, 1024 // 256) == 2
    assert _flash_splits(1000, 264, 16) == 1  # enough blocks to fill the SMs


def test_is_dense():
    t = torch.empty(2, 3, 4, 5, device="meta")
    assert is_dense(t) and is_dense(t.transpose(1, 2))
    assert not is_dense(torch.empty(2, 1, 4, 5, device="meta").expand(2, 3, 4, 5))
    assert not is_dense(t[:, :, ::2])


def test_the_rules_name_every_op_they_act_on():
    """The tracker skips the rules for an op no rule set names (`ops`): every other op a step
    dispatches must get nothing from them. Each op of a training step of every implementation
    (and the ops named) is put to every rule set."""
    from sa_profiler.targets import gpus
    from sa_profiler.engine import Workload, simulate
    from sa_profiler.engine import tracker as tracking
    from sa_profiler.engine.layouts import ChainedRules, LayoutRules
    from sa_profiler.engine.rules import RULES, CudaRules

    h100 = gpus.lookup("h100")
    sets = [LayoutRules(), LayoutRules(cuda=False), CudaRules(h100), ChainedRules(LayoutRules(), CudaRules(h100))]
    assert set(RULES) <= CudaRules.ops and sets[3].ops == LayoutRules.ops | CudaRules.ops
    assert LayoutRules.ops == {"convolution", "convolution_backward"}  # the two its methods test for
    seen = []
    general = tracking.MemoryTracker.__torch_dispatch__

    def spy(self, func, types, args=(), kwargs=None):
        out = general(self, func, types, args, kwargs)
        seen.append((func, args, kwargs or {}, out))
        return out

    tracking.MemoryTracker.__torch_dispatch__ = spy
    try:
        for impl, opts in [("reference", {}), ("sdpa", {"backend": "efficient"}), ("sdpa", {"backend": "flash"}),
                           ("sdpa", {"backend": "cudnn"}), ("chunked", {"chunk": 64, "checkpoint": True})]:
            simulate(Workload(impl, 2, 64, 8, 16, "float16", "train", "h100", opts))
    finally:
        tracking.MemoryTracker.__torch_dispatch__ = general
    others = [(f, a, k, o) for f, a, k, o in seen if f.overloadpacket.__name__ not in sets[3].ops]
    assert len(others) > 50 and len(others) < len(seen)
    for rules in sets:
        for func, args, kwargs, out in others:
            outputs = [t for t in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(t, torch.Tensor)]
            assert rules.restride(func, args, out) is out
            assert tuple(rules.untracked_outputs(func, args, outputs)) == ()
            assert list(rules.transients(func, args, kwargs, outputs)) == []
