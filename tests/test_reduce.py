"""The CUDA reduction scratch rule (engine/reduce.py) against H100 measurements, torch 2.11.

- reports/validation/reductions-h100-2.11.0.csv (benchmarks/probe_reductions.py): 750 sums and
  means of contiguous inputs, fp32/fp16/bf16, over the leading dim, the last dim, or all dims;
- reports/validation/reduction-layouts-h100-2.11.0.csv (benchmarks/probe_reduction_layouts.py):
  amax/amin, transposed and channels-last inputs, inputs 1-4 elements past an aligned block,
  3-D inputs, `dtype=torch.float32` of 16-bit inputs, 2.5 GB inputs beyond 32-bit indexing;
- the `sum` rows of reports/validation/h100-probe-ops.csv (whole training steps).
Each `transient` (peak during the op - allocated after it) must equal the rule's buffer and
semaphores, each rounded to the caching allocator's 512-byte blocks. The port follows the
Reduce.cuh that torch 2.13 ships in its headers; the 2.11 measurements match it to the byte.
"""

import ast
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sa_profiler.targets import gpus
from sa_profiler.engine.allocator import round_size
from sa_profiler.engine.reduce import (MAX_THREADS_PER_SM, max_threads_per_sm, reduce_config, reduction_scratch,
                                       temps_for)

VALIDATION = Path(__file__).parent.parent / "reports" / "validation"
H100 = gpus.CATALOGUE["h100"]
F32 = torch.float32


def _dims(text):
    return tuple(int(d) for d in str(text).split(",")) if isinstance(text, str) and text else None


def _shape(text):
    return tuple(int(s) for s in text.split("x"))


def _acc(op, dtype):
    # sum/mean accumulate half, bfloat16 and float in float (ReduceSumProdKernel.cu sum_functor,
    # ReduceMomentKernel.cu mean_kernel_impl); amax/amin in the input type (max_values_kernel_cuda_impl)
    return dtype if op in ("amax", "amin") else F32


def _blocks(sizes):
    return sum(round_size(b) for b in sizes)


def _contiguous(shape):
    return torch.empty(shape, device="meta").stride()


def test_every_contiguous_reduction_measured_on_h100():
    rows = pd.read_csv(VALIDATION / "reductions-h100-2.11.0.csv")
    assert len(rows) == 750 and set(rows.sms) == {132}
    differ = []
    for r in rows.itertuples(index=False):
        shape, dtype = _shape(r.shape), getattr(torch, r.dtype)
        got = _blocks(reduction_scratch(shape, _contiguous(shape), _dims(r.dims), dtype, _acc(r.op, dtype), H100))
        if got != r.transient:
            differ.append((r.op, r.shape, r.dims, r.dtype, r.transient, got))
    assert not differ, differ[:10]
    assert rows.transient.max() == 138412544 and (rows.transient > 0).sum() > 200  # the data reach 132 MiB


def test_layouts_offsets_and_amax_measured_on_h100():
    rows = pd.read_csv(VALIDATION / "reduction-layouts-h100-2.11.0.csv", dtype={"dims": str, "strides": str})
    assert len(rows) == 73
    for r in rows.itertuples(index=False):
        dtype = getattr(torch, r.dtype)
        strides = tuple(int(s) for s in r.strides.split(","))
        out_dtype = getattr(torch, r.out_dtype) if isinstance(r.out_dtype, str) else None
        got = _blocks(reduction_scratch(_shape(r.shape), strides, _dims(r.dims), dtype, _acc(r.op, dtype), H100,
                                        r.storage_offset, out_dtype))
        assert got == r.transient, r


def _reduced(shape, out_shape):
    """The reduced dims of a recorded call, from its input and output shapes (keepdim or not)."""
    if out_shape == ():
        return None
    if len(out_shape) == len(shape):
        return [d for d, (a, b) in enumerate(zip(shape, out_shape)) if a != b]
    dims, kept = [], list(out_shape)
    for d, n in enumerate(shape):
        if kept and kept[0] == n:
            kept.pop(0)
        else:
            dims.append(d)
    return dims


@pytest.mark.parametrize("probe", ["h100-probe-ops.csv", "probe-fit-h100.csv"])
def test_reductions_inside_measured_training_steps(probe):
    """Every sum and mean the whole-step probes recorded (bias gradients of ViT, BERT and UNet
    blocks, losses, weight norms), through `temps_for` as the tracker calls it."""
    data = pd.read_csv(VALIDATION / probe)
    rows = data[data.op.isin(["sum", "mean"])].drop_duplicates(["op", "inputs", "outputs"])
    assert len(rows) >= 20 and rows.hidden_transient.max() > 0
    for r in rows.itertuples(index=False):
        shape, dtype, stride, _, _ = r.inputs.split(";")[0].rsplit(":", 4)
        shape, stride = ast.literal_eval(shape), ast.literal_eval(stride)
        x = torch.empty_strided(shape, stride, dtype=getattr(torch, dtype), device="meta")
        out_shape, out_dtype, out_stride, _ = r.outputs.split(";")[0].rsplit(":", 3)
        out = torch.empty_strided(ast.literal_eval(out_shape), ast.literal_eval(out_stride),
                                  dtype=getattr(torch, out_dtype), device="meta")
        dims = _reduced(shape, tuple(out.shape))
        temps = temps_for(r.op)((x,) if dims is None else (x, dims), [out], H100)
        assert sum(round_size(t[0]) for t in temps) == r.hidden_transient + max(r.hidden_kept, 0), r


def test_bias_gradient_of_a_vit_mlp():
    """`grad.sum(0)` of 6304 x 1536 (ViT-S MLP hidden bias, batch 32 x 197 tokens) on an H100.

    The iterator puts the reduced dim (stride 1536) after the kept one (stride 1): not on the
    fastest dim, so "vectorize along output": output_vec_size 4 (aligned address, 1536 % 4 and
    stride 1536 % 4 == 0), dim0 = 1536 / 4 = 384, dim1 = 6304, at most 512 / 4 = 128 threads:
    block 32 x 4. Each lane a group of 4 outputs: step_output 32, grid.x = 384 / 32 = 12;
    6304 values >= min(4 * 16, 256): split across the 4 warps, values_per_thread 1576.
    target_grid = 132 SMs x (2048 / 128) = 2112 blocks; ctas_per_output = max(min(2112 / 12
    -> 176, 1576 / 16 -> 99), 1576 / 256 -> 7) = 99. global_memory_size = 4 B x 1536 outputs
    x 99 x (block.x 32 x 4) = 77,856,768; semaphores 4 x 12 = 48 -> 512: 77,857,280 measured.
    """
    config = reduce_config((6304, 1536), (1536, 1), (0,), torch.bfloat16, F32, H100)
    assert (config["output_vec_size"], config["block"], config["grid"]) == (4, (32, 4), (12, 99))
    assert reduction_scratch((6304, 1536), (1536, 1), (0,), torch.bfloat16, F32, H100) == [77856768, 48]


def test_staging_is_capped_by_the_sm_count():
    """6304 x 4096, dim 0: grid.x = 1024 / 32 = 32, ctas_per_output = min(2112 / 32 = 66, 99)
    = 66: 4 x 4096 x 66 x 128 = 138,412,032 = 132 MiB, the largest in the data. Whenever
    ctas_per_output = target_grid / grid.x, outputs x ctas = 128 x 2112 and the buffer is
    4 B x 128 x 2112 x 128 lanes: 1 MiB per SM, whatever the number of outputs."""
    assert reduction_scratch((6304, 4096), (4096, 1), (0,), F32, F32, H100) == [132 * 2**20, 128]
    assert reduction_scratch((65536, 1536), (1536, 1), (0,), F32, F32, H100) == [132 * 2**20, 48]


def test_full_reduction():
    """sum of 65536 x 4096 (2^28 values, one 1-D dim after coalescing): a block of 512 lanes
    along the input (block_x_reduce, no block.x factor), values_per_thread 2^28 / 512 = 2^19;
    target_grid 132 x 4 = 528 < 2^19 / 256 = 2048 blocks: 4 B x 1 output x 2048 = 8192 and one
    semaphore -> 8192 + 512 = 8704 measured."""
    assert reduction_scratch((65536, 4096), (4096, 1), None, F32, F32, H100) == [8192, 4]
    assert reduction_scratch((2**28,), (1,), [], torch.float16, F32, H100) == [8192, 4]


def test_beyond_32bit_indexing():
    """600000 x 1024 float32 (2.46 GB) spans more than INT32_MAX bytes: with_32bit_indexing
    halves the dim of largest byte extent (the 600000 rows), and each half launches alone,
    freeing its scratch first. A half: grid.x 8, values_per_thread 300000 / 4 = 75000,
    ctas_per_output = max(min(2112 / 8 = 264, 4688), 75000 / 256 -> 293) = 293:
    4 x 1024 x 293 x 128 = 153,616,384 (measured 153,616,896 with the semaphores' block).
    A float16 -> float16 sum cannot accumulate in its output across pieces: an
    AccumulationBuffer of the output in float stays for all of them (1200000 rows x 4 B for
    sum(x, 1), whose pieces need no scratch: 4,800,000 measured)."""
    assert reduction_scratch((600000, 1024), (1024, 1), (0,), F32, F32, H100) == [153616384, 32]
    assert reduction_scratch((1200000, 1024), (1024, 1), (1,), torch.float16, F32, H100) == [4800000]
    # float output: accumulates in place, no buffer
    assert reduction_scratch((1200000, 1024), (1024, 1), (1,), torch.float16, F32, H100, out_dtype=F32) == []


def test_inner_dim_reduction_stays_in_one_block():
    """sum(x, -1) of 6304 x 1536: along input, dim0 = 1536 / 4 -> 256, block 32 x 16, 48 values
    per lane < 256: no split across blocks, no scratch (0 measured)."""
    assert reduction_scratch((6304, 1536), (1536, 1), (1,), F32, F32, H100) == []
    assert not reduce_config((6304, 1536), (1536, 1), (1,), F32, F32, H100)["global_reduce"]


def test_misaligned_input_loses_output_vectorisation():
    """get_output_vec_size halves 4 until it divides the input address in elements: one
    element past an aligned block gives 1, so 64 lanes x 1 output: block 32 x 16 (512 threads),
    grid.x 2, target 132 x 4 = 528, values_per_thread 4096 / 16 = 256, ctas min(264, 16) = 16:
    4 x 64 x 16 x 32 = 131,072 (+ 8 B of semaphores), a quarter of the aligned 524,288."""
    assert reduction_scratch((4096, 64), (64, 1), (0,), F32, F32, H100, storage_offset=1) == [131072, 8]
    assert reduction_scratch((4096, 64), (64, 1), (0,), F32, F32, H100) == [524288, 4]


def test_smaller_card():
    """A T4 (sm75: 1024 threads per SM, 40 SMs): target_grid 40 x 8 = 320, ctas_per_output
    min(320 / 12 -> 27, 99) = 27 for the ViT bias gradient: 4 x 1536 x 27 x 128."""
    t4 = gpus.CATALOGUE["t4"]
    assert reduction_scratch((6304, 1536), (1536, 1), (0,), torch.float16, F32, t4) == [21233664, 48]


def test_dimension_order_follows_strides_not_names():
    """TensorIterator sorts dims by stride: reducing a transposed view's dim 1 is the same
    kernel as reducing the contiguous tensor's dim 0."""
    assert (reduction_scratch((1536, 6304), (1, 1536), (1,), F32, F32, H100)
            == reduction_scratch((6304, 1536), (1536, 1), (0,), F32, F32, H100))
    # keepdim-free 3-D: (0, 1) of B x N x C coalesces to the 2-D leading-dim sum
    assert (reduction_scratch((32, 197, 384), (197 * 384, 384, 1), (0, 1), F32, F32, H100)
            == reduction_scratch((6304, 384), (384, 1), (-2,), F32, F32, H100))


@pytest.mark.parametrize("shape,dims", [((65536, 4096), None), ((1000, 192), None), ((64, 4096), (1,)),
                                        ((262144, 3), (1,)), ((6304, 1536), (0,)), ((16, 256, 64, 64), (2, 3))])
def test_input_vec_size_never_changes_the_scratch(shape, dims):
    """16-bit sums pass input_vec_size 8 where float passes 4: it only shortens blocks too short
    to split across blocks (values_per_thread < 2 x input_vec_size there)."""
    a = reduce_config(shape, _contiguous(shape), dims, F32, F32, H100, input_vec_size=4)
    b = reduce_config(shape, _contiguous(shape), dims, F32, F32, H100, input_vec_size=8)
    assert (a.get("buffer"), a.get("semaphores")) == (b.get("buffer"), b.get("semaphores"))


def test_block_shape_of_short_reductions():
    """Where input_vec_size does show: 1024 values along the input are 1024 / 4 = 256 vectors
    (block 256 x 1) or 1024 / 8 = 128; two reduced dims that do not coalesce (dims 0 and 2 of
    2 x 2 x 64) are not vectorised at all: dim0 = 128 values, dim1 = 2 outputs: block 128 x 2."""
    assert reduce_config((1, 1024), (1024, 1), None, F32, F32, H100)["block"] == (256, 1)
    assert reduce_config((1, 1024), (1024, 1), None, torch.float16, F32, H100)["block"] == (128, 1)
    assert reduce_config((2, 2, 64), (128, 64, 1), (0, 2), F32, F32, H100)["block"] == (128, 2)


def test_every_catalogue_card_has_its_threads_per_sm():
    assert {g.capability for g in gpus.CATALOGUE.values()} <= set(MAX_THREADS_PER_SM)
    assert max_threads_per_sm((8, 9)) == 1536 and max_threads_per_sm((7, 5)) == 1024
    assert max_threads_per_sm((9, 0)) == 2048 and max_threads_per_sm((12, 1)) == 1536  # nearest older listed


def test_empty_and_scalar_inputs():
    assert reduction_scratch((0, 1536), (1536, 1), (0,), F32, F32, H100) == []
    assert reduction_scratch((), (), None, F32, F32, H100) == []


def test_only_capability_and_sm_count_are_read():
    """An RTX 3060 (sm86: 1536 threads per SM, 28 SMs): target_grid 28 x 12 = 336, ctas_per_output
    min(336 / 12 -> 28, 99) = 28: 4 x 1536 x 28 x 128."""
    card = SimpleNamespace(capability=(8, 6), sms=28)
    assert reduction_scratch((6304, 1536), (1536, 1), (0,), F32, F32, card) == [22020096, 48]


class _Calls(TorchDispatchMode):
    """The aten calls a dispatch mode sees, with their outputs."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.calls.append((func.overloadpacket.__name__, args, out if isinstance(out, tuple) else (out,)))
        return out


def _meta_input(shape, dtype, layout):
    if layout == "t":
        return torch.empty(shape[::-1], dtype=dtype, device="meta").t()
    if layout == "cl":
        return torch.empty(shape, dtype=dtype, device="meta").contiguous(memory_format=torch.channels_last)
    if layout.startswith("off"):
        k = int(layout[3:])
        return torch.empty(math.prod(shape) + k, dtype=dtype, device="meta")[k:].view(shape)
    return torch.empty(shape, dtype=dtype, device="meta")


def _dispatched_temps(f):
    with _Calls() as mode:
        f()
    (name, args, outputs), = [c for c in mode.calls if c[0] in ("sum", "mean", "amax", "amin")]
    return temps_for(name)(args, outputs, H100)


def test_rule_from_dispatched_calls():
    """`temps_for` reads what a dispatch mode sees (aten.sum.dim_IntList, sum.default, mean.dim,
    amax.default ... on meta tensors) and gives every row of the layout probe."""
    rows = pd.read_csv(VALIDATION / "reduction-layouts-h100-2.11.0.csv", dtype={"dims": str, "strides": str})
    for r in rows.itertuples(index=False):
        x = _meta_input(_shape(r.shape), getattr(torch, r.dtype), r.layout)
        kw = {"dtype": getattr(torch, r.out_dtype)} if isinstance(r.out_dtype, str) else {}
        f = getattr(torch, r.op)
        temps = _dispatched_temps(lambda: f(x, **kw) if _dims(r.dims) is None else f(x, _dims(r.dims), **kw))
        assert sum(round_size(t[0]) for t in temps) == r.transient, r


def test_rule_counts_the_int64_copy_of_an_integer_sum():
    """sum of a bool mask reduces `self.to(kLong)` (make_reduction, out dtype int64): the copy,
    6304 x 1536 x 8 B, is alive during the kernel, which accumulates in int64 (sum_functor<int64_t>):
    the bias-gradient configuration with 8-byte partials, 8 x 1536 x 99 x 128 (derived, not measured)."""
    x = torch.empty(6304, 1536, dtype=torch.bool, device="meta")
    temps = _dispatched_temps(lambda: x.sum(0))
    assert [t[0] for t in temps] == [6304 * 1536 * 8, 8 * 1536 * 99 * 128, 48]
    assert _dispatched_temps(lambda: torch.empty(6304, 1536, device="meta").sum(1)) == []
