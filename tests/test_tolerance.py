"""The validation tolerance bites: it is derived from the committed H100 data, and dropping any
one rule makes the committed data fail (the whole-step peaks, or for the two rules whose bytes
are never at a step's peak on that data, the per-op probes)."""

import ast
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from sa_profiler.targets import gpus
from sa_profiler.engine import rules
from sa_profiler.engine.allocator import round_size
from sa_profiler.validation.accuracy import FLOORS, floors, resimulate, tolerance, validation_csvs

PROBES = sorted((Path(__file__).parent.parent / "reports" / "validation").glob("*probe*.csv"))

# Every rule by name (not parametrised over RULES, so a deleted rule is still dropped here).
ALL_RULES = [
    "_softmax_backward_data",
    "_safe_softmax",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_efficient_attention_backward",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_backward",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_cudnn_attention_backward",
    "native_layer_norm",
    "native_layer_norm_backward",
    "sum",
    "mean",
]
# Rules whose bytes are transient inside an op that is never at the step's peak on the committed
# grids (the efficient forward's fp32 output accumulator, value heads > 128 in fp16/bf16: the
# step peaks later, at the residual add; cuDNN forward's 512-byte scratch): the whole-step data
# cannot see them, the per-op probes do. Layer norm is in no layer grid: the whole-model probes
# (probe-fit-h100.csv) hold its copies of a strided input.
PER_OP_ONLY = {"_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
               "native_layer_norm", "native_layer_norm_backward", "sum", "mean"}


@pytest.fixture(scope="module")
def today():
    return pd.concat([resimulate(p) for p in validation_csvs()], ignore_index=True)


def test_floors_are_derived_from_the_data(today):
    """FLOORS is exactly the largest residual per backend: a rule that improves must tighten it
    (python -m sa_profiler.validation.accuracy --floors prints the new values)."""
    found = floors(today)
    assert set(found) == set(FLOORS)
    assert found == FLOORS, ("the residuals moved: set FLOORS in sa_profiler/validation/accuracy.py (and the README's "
                             f"Tolerance paragraph) to {found}, the output of python -m sa_profiler.validation.accuracy --floors")


def test_floors_are_tighter_than_the_old_goal():
    assert max(FLOORS.values()) < 2 * 2**20
    assert tolerance(10 * 2**30, "cudnn") == FLOORS["cudnn"]  # no relative slack on large rows
    assert tolerance(2**20, "") == FLOORS["bmm"]


def test_rules_listed_here_are_the_rules():
    assert set(ALL_RULES) == set(rules.RULES)


def _probe_explained(op: str) -> int:
    """Probe rows of `op` with hidden bytes that today's rules predict to the byte."""
    explained = 0
    cuda = rules.CudaRules(gpus.lookup("h100"))
    for path in PROBES:
        data = pd.read_csv(path)
        for r in data[data.op == op].itertuples(index=False):
            measured = max(r.hidden_transient, 0) + max(r.hidden_kept, 0)
            if measured <= 0:
                continue
            args = []
            for spec in r.inputs.split(";"):
                shape, dtype, stride, _, device = spec.rsplit(":", 4)
                args.append(torch.empty_strided(ast.literal_eval(shape), ast.literal_eval(stride),
                                                dtype=getattr(torch, dtype), device="meta")
                            if device == "cuda" else torch.empty((), dtype=torch.int64))
            outs = []
            if op in ("sum", "mean"):  # the reduced dims are not logged: read them off the output's shape
                from test_reduce import _reduced

                out_shape, out_dtype, out_stride, _ = r.outputs.split(";")[0].rsplit(":", 3)
                outs = [torch.empty_strided(ast.literal_eval(out_shape), ast.literal_eval(out_stride),
                                            dtype=getattr(torch, out_dtype), device="meta")]
                dims = _reduced(tuple(args[0].shape), tuple(outs[0].shape))
                args = args[:1] + ([dims] if dims is not None else [])
            temps = cuda.transients(SimpleNamespace(overloadpacket=SimpleNamespace(__name__=op)), args, {}, outs)
            explained += sum(round_size(b) for b, *_ in temps) == measured
    return explained


@pytest.mark.parametrize("op", ALL_RULES)
def test_dropping_a_rule_fails_validation(op, monkeypatch):
    if op in PER_OP_ONLY:
        assert _probe_explained(op) > 0
        monkeypatch.delitem(rules.RULES, op, raising=False)
        assert _probe_explained(op) == 0
        return
    monkeypatch.delitem(rules.RULES, op, raising=False)
    result = pd.concat([resimulate(p) for p in validation_csvs()], ignore_index=True)
    assert (~result.within).sum() > 0, f"dropping {op} leaves every committed row within the floor"
