"""Scratch memory a CUDA reduction takes from the caching allocator.

`gpu_reduce_kernel` (aten/src/ATen/native/cuda/Reduce.cuh) launches one kernel per reduction.
When `setReduceConfig` splits each output over several thread blocks (`ctas_per_output > 1`,
`should_global_reduce()`), the blocks meet in global memory: the launcher allocates a staging
`buffer` of `config.global_memory_size()` bytes and `semaphores` of `config.semaphore_size()`
bytes through the CUDA caching allocator, both alive for the launch. Bias gradients
(`grad.sum(0)` over a batch of tokens) make tens of MiB of it.

This module ports the heuristic: `TensorIterator`'s dimension order and coalescing
(aten/src/ATen/TensorIterator.cpp `reorder_dimensions`, `coalesce_dimensions`), then
`setReduceConfig`, `get_output_vec_size` and `ReduceConfig`'s sizes. It depends on the card
(SM count, threads per SM, warp size 32) and, through the output vectorisation, on the input's
address: the caching allocator hands out 512-byte aligned blocks, so only `storage_offset`
can misalign it. An input beyond 32-bit indexing is reduced in pieces (`with_32bit_indexing`).
`temps_for` is the per-op rule (sum, mean, amax, amin) as a dispatch mode sees the call.

Ported from the Reduce.cuh of torch 2.13 (its installed headers); the H100 measurements of
torch 2.11 (reports/validation/reductions-h100-2.11.0.csv, reduction-layouts-h100-2.11.0.csv
and the sum/mean rows of the whole-step probes) match it to the byte (tests/test_reduce.py).
"""

from __future__ import annotations

import math

import torch

from sa_profiler.engine.allocator import round_size

WARP = 32  # at::cuda::warp_size() on NVIDIA cards
MAX_THREADS = 512  # mnt_wrapper<T>::MAX_NUM_THREADS (256 for complex<double>)
MIN_VALUES_PER_THREAD = 16  # setReduceConfig (128 on ROCm)
MAX_VALUES_PER_THREAD = 256
INT = 4  # sizeof(int), one semaphore per output block column
INT32_MAX = 2**31 - 1
LOW = (torch.float16, torch.bfloat16)

# maxThreadsPerMultiProcessor: CUDA C++ Programming Guide, "Technical Specifications per
# Compute Capability" (maximum number of resident threads per SM).
MAX_THREADS_PER_SM = {
    (6, 0): 2048, (6, 1): 2048, (7, 0): 2048, (7, 2): 2048, (7, 5): 1024, (8, 0): 2048,
    (8, 6): 1536, (8, 7): 2048, (8, 9): 1536, (9, 0): 2048, (10, 0): 2048, (12, 0): 1536,
}


def max_threads_per_sm(capability: tuple[int, int]) -> int:
    """The table's figure, or that of the nearest older listed capability for a card not in it."""
    known = [c for c in MAX_THREADS_PER_SM if c <= tuple(capability)]
    return MAX_THREADS_PER_SM[max(known)] if known else 2048


def _last_pow2(n: int) -> int:
    """Reduce.cuh `last_pow2`: the largest power of two <= n, at least 1."""
    return max(1, 1 << (n.bit_length() - 1)) if n > 0 else 1


def _div_up(a: int, b: int) -> int:
    return -(-a // b)


def iterator_layout(shape, strides, reduced_dims, in_size: int, out_size: int):
    """(shape, input byte strides, output byte strides) of the reduction's TensorIterator.

    `TensorIterator::reduce_op(viewed_result, self)`: the output has stride 0 in the reduced
    dims (ReduceOpsUtils.h `review_reduce_result`) and is contiguous in the kept ones
    (`resize_reduction` allocates it with no strides). `reorder_dimensions` sorts dims
    fastest first, reduced dims to the front; `coalesce_dimensions` merges neighbours that
    are size 1 or contiguous for every operand.
    """
    ndim = len(shape)
    reduced = set(range(ndim)) if not reduced_dims else {d % ndim for d in reduced_dims}
    out, step = [0] * ndim, out_size
    for d in reversed(range(ndim)):
        if d not in reduced:
            out[d], step = step, step * shape[d]
    ins = [s * in_size for s in strides]  # compute_strides: the input is not broadcast
    ops = [out, ins]

    def should_swap(d0, d1):  # 1: d0 after d1, -1: before, 0: ambiguous
        for i, st in enumerate(ops):
            s0, s1 = st[d0], st[d1]
            if i == 0 and (s0 == 0) != (s1 == 0):
                return 1 if s1 == 0 else -1  # reduced dims to the front
            if s0 == 0 or s1 == 0:
                continue
            if s0 != s1:
                return -1 if s0 < s1 else 1
            if shape[d0] > shape[d1]:
                return 1
        return 0

    perm = list(reversed(range(ndim)))
    for i in range(1, ndim):
        d1 = i
        for d0 in range(i - 1, -1, -1):
            c = should_swap(perm[d0], perm[d1])
            if c > 0:
                perm[d0], perm[d1] = perm[d1], perm[d0]
                d1 = d0
            elif c < 0:
                break
    sh = [shape[p] for p in perm]
    ops = [[st[p] for p in perm] for st in ops]
    if ndim > 1:
        prev = 0
        for d in range(1, ndim):
            if sh[prev] == 1 or sh[d] == 1 or all(sh[prev] * st[prev] == st[d] for st in ops):
                if sh[prev] == 1:
                    for st in ops:
                        st[prev] = st[d]
                sh[prev] *= sh[d]
            else:
                prev += 1
                if prev != d:
                    for st in ops:
                        st[prev] = st[d]
                    sh[prev] = sh[d]
        sh = sh[:prev + 1]
        ops = [st[:prev + 1] for st in ops]
    return sh, ops[1], ops[0]


def _fits_32bit(sh, ins, out) -> bool:
    """TensorIteratorBase::can_use_32bit_indexing: numel and every operand's last byte offset
    within INT32_MAX."""
    if math.prod(sh) > INT32_MAX:
        return False
    return all(1 + sum((n - 1) * s for n, s in zip(sh, st)) <= INT32_MAX for st in (out, ins))


def split_32bit(sh, ins, out, address: int):
    """The sub-iterators `iter.with_32bit_indexing()` launches one by one (SplitUntil32Bit:
    `get_dim_to_split` takes the dim of largest byte extent, the last on ties among later
    operands, and `split` halves it; `narrow` moves the input's address). Yields
    (shape, input strides, output strides, input address)."""
    stack = [(list(sh), ins, out, address)]
    while stack:
        sh, ins, out, address = stack.pop()
        if _fits_32bit(sh, ins, out):
            yield sh, ins, out, address
            continue
        best, dim = -1, -1
        for d in reversed(range(len(sh))):
            for st in (out, ins):
                if (sh[d] - 1) * abs(st[d]) > best:
                    best, dim = (sh[d] - 1) * abs(st[d]), d
        half = sh[dim] // 2
        first, second = list(sh), list(sh)
        first[dim], second[dim] = half, sh[dim] - half
        stack.append((second, ins, out, address + ins[dim] * half))
        stack.append((first, ins, out, address))


def _output_vec_size(shape, in_strides, num_reduce_dims, in_size, address):
    """Reduce.cuh `get_output_vec_size`: 4, halved until it divides the input's address (in
    elements), the first kept dim, and every other dim's input stride (in elements)."""
    vec = 4
    for n in [address // in_size, shape[num_reduce_dims]] + [
            s // in_size for j, s in enumerate(in_strides) if j != num_reduce_dims]:
        while n % vec:
            vec //= 2
    return vec


def _size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def launch_config(sh, ins, out, address: int, in_size: int, acc_size: int, input_vec_size: int, gpu) -> dict:
    """Reduce.cuh `setReduceConfig<arg_t, scalar_t, vt0, input_vec_size>` for one iterator that
    fits 32-bit indexing, and the scratch it allocates (`buffer`, `semaphores`) if any."""
    ndim = len(sh)
    nred = sum(1 for s in out if s == 0)  # num_reduce_dims: the reduced dims are in front
    num_outputs = math.prod(n for n, o in zip(sh, out) if o != 0)
    inputs_per_output = math.prod(sh) // num_outputs
    if ndim > 0:
        fastest = nred == ndim or ins[0] < ins[nred]  # reduction_on_fastest_striding_dimension
        dim0, dim1 = (inputs_per_output, num_outputs) if fastest else (num_outputs, inputs_per_output)
        fastest_stride = ins[0] if fastest else ins[nred]
    else:
        fastest, fastest_stride, dim0, dim1 = True, in_size, 1, 1
    # "vectorize along input" (Case 1) or "along output" (Case 2)
    output_vec = 1
    if fastest_stride == in_size:
        if fastest and dim0 >= 128 and nred == 1:
            dim0 //= input_vec_size
        elif not fastest:
            output_vec = _output_vec_size(sh, ins, nred, in_size, address)
            dim0 //= output_vec
    # ReduceConfig::set_block_dimension<scalar_t>
    max_threads = MAX_THREADS // output_vec
    dim0_pow2 = _last_pow2(dim0) if dim0 < max_threads else max_threads
    dim1_pow2 = _last_pow2(dim1) if dim1 < max_threads else max_threads
    width = min(dim0_pow2, WARP)
    height = min(dim1_pow2, max_threads // width)
    width = min(dim0_pow2, max_threads // height)
    step_input = step_output = 1
    if fastest:
        step_input *= width  # input_mult[0] = split_input(block_width)
    else:
        step_output *= width  # output_mult[0] = split_output(block_width)
    split_across_warps = _div_up(inputs_per_output, step_input) >= min(height * 16, MAX_VALUES_PER_THREAD)
    if split_across_warps:
        step_input *= height  # input_mult[1] = split_input(block_height)
    else:
        step_output *= height  # output_mult[1] = split_output(block_height)
    target_grid = gpu.sms * (max_threads_per_sm(gpu.capability) // (width * height))
    grid_x = _div_up(num_outputs // output_vec, step_output)
    values_per_thread = _div_up(inputs_per_output, step_input)
    ctas = 1
    if split_across_warps and values_per_thread >= MAX_VALUES_PER_THREAD and grid_x <= target_grid:
        ctas = max(min(_div_up(target_grid, grid_x), _div_up(values_per_thread, MIN_VALUES_PER_THREAD)),
                   _div_up(values_per_thread, MAX_VALUES_PER_THREAD))
    config = {"block": (width, height), "grid": (grid_x, ctas), "output_vec_size": output_vec,
              "global_reduce": ctas > 1, "scratch": []}
    if ctas > 1:  # should_global_reduce(): ReduceConfig::global_memory_size() and semaphore_size()
        size = acc_size * num_outputs * ctas
        if not fastest:  # no block_x_reduce: one partial per lane and output
            size *= width * output_vec
        config["scratch"] = [size, INT * grid_x]
    return config


def _vec_size(in_dtype: torch.dtype, input_vec_size: int | None) -> int:
    # ReduceSumProdKernel.cu / ReduceMomentKernel.cu: 16-bit sums and means launch with
    # input_vec_size 8, others with vt0 = 4. It only narrows blocks too short to split across
    # blocks, so it never changes the scratch (tests/test_reduce.py checks 4 and 8).
    return input_vec_size or (8 if _size(in_dtype) == 2 else 4)


def reduce_config(shape, strides, reduced_dims, in_dtype: torch.dtype, acc_dtype: torch.dtype, gpu,
                  storage_offset: int = 0, input_vec_size: int | None = None) -> dict:
    """`launch_config` of a reduction whose iterator fits 32-bit indexing (the usual case)."""
    in_size = _size(in_dtype)
    if math.prod(shape) == 0:
        return {"global_reduce": False, "scratch": []}
    sh, ins, out = iterator_layout(list(shape), list(strides), reduced_dims, in_size, in_size)
    return launch_config(sh, ins, out, storage_offset * in_size, in_size, _size(acc_dtype),
                         _vec_size(in_dtype, input_vec_size), gpu)


def reduction_scratch(shape, strides, reduced_dims, in_dtype: torch.dtype, acc_dtype: torch.dtype, gpu,
                      storage_offset: int = 0, out_dtype: torch.dtype | None = None) -> list[int]:
    """Bytes `gpu_reduce_kernel` holds from the caching allocator at its peak, before the
    512-byte rounding: the launch's `buffer` and `semaphores` when outputs are split across
    blocks, else nothing.

    `strides` in elements; `reduced_dims` empty or None reduces every dim; `acc_dtype` is the
    kernel's `arg_t` (float for half, bfloat16 and float sums and means; the input type for
    amax/amin); `out_dtype` defaults to `in_dtype`. An iterator beyond 32-bit indexing is
    launched in pieces (`with_32bit_indexing`), each freeing its scratch before the next, so
    the largest piece counts; a 16-bit output summed in float then also keeps an
    `AccumulationBuffer` of the output's extent in `arg_t` across all pieces (first in the list).
    """
    return [n for n, _ in _scratch(shape, strides, reduced_dims, in_dtype, acc_dtype, gpu, storage_offset, out_dtype)]


def _scratch(shape, strides, reduced_dims, in_dtype, acc_dtype, gpu, storage_offset=0, out_dtype=None):
    if math.prod(shape) == 0:
        return []
    in_size, acc_size = _size(in_dtype), _size(acc_dtype)
    out_size = _size(out_dtype or in_dtype)
    sh, ins, out = iterator_layout(list(shape), list(strides), reduced_dims, in_size, out_size)
    ivs = _vec_size(in_dtype, None)
    pieces = [launch_config(*piece, in_size, acc_size, ivs, gpu)["scratch"]
              for piece in split_32bit(sh, ins, out, storage_offset * in_size)]
    largest = max(pieces, key=lambda sizes: sum(round_size(b) for b in sizes))
    largest = list(zip(largest, ("staging buffer", "semaphores")))
    if len(pieces) == 1:
        return largest
    # can_accumulate_in_output is false for half->half and bfloat16->bfloat16, and the buffer is
    # only allocated when out_t is narrower than arg_t
    if (out_dtype or in_dtype) == in_dtype and in_dtype in LOW and out_size < acc_size:
        extent = max([out_size] + [n * s for n, s in zip(sh, out)]) // out_size
        return [(extent * acc_size, "accumulation buffer")] + largest
    return largest


def _dense(t: torch.Tensor) -> bool:
    """c10 `is_non_overlapping_and_dense`, by sorting strides."""
    expected = 1
    for stride, size in sorted((st, n) for n, st in zip(t.shape, t.stride()) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def temps_for(op: str):
    """A rules.py `Rule.temps` for `sum`, `mean` (float accumulation of 16-bit inputs, else the
    input type: ReduceSumProdKernel.cu `sum_kernel_cuda`, ReduceMomentKernel.cu
    `mean_kernel_cuda`) or `amax`/`amin` (the input type: `max_values_kernel_cuda_impl`).

    `make_reduction` reduces `self.to(in_dtype)`, where in_dtype is the output's dtype except
    for a 16-bit input summed into float32 (ReduceOpsUtils.h); for sum of integers or bools
    (int64 output) that copy is also hidden scratch, alive during the kernel.
    """
    def temps(args, outputs, gpu):
        x, out = args[0], outputs[0]
        dims = args[1] if len(args) > 1 else None
        dims = [dims] if isinstance(dims, int) else dims
        if op in ("amax", "amin") or (x.dtype in LOW and out.dtype == torch.float32):
            in_dtype = x.dtype
        else:
            in_dtype = out.dtype
        if in_dtype.is_complex:
            return []  # complex accumulation types are not modelled
        found = []
        shape, strides, offset = tuple(x.shape), x.stride(), x.storage_offset()
        if in_dtype != x.dtype:
            nbytes = x.numel() * _size(in_dtype)
            found.append((nbytes, shape, str(in_dtype)[6:], f"{op}: input converted to {str(in_dtype)[6:]}"))
            # empty_like(preserve_format): the same strides if dense, else contiguous
            strides = strides if _dense(x) else torch.empty(shape, device="meta").stride()
            offset = 0
        acc = x.dtype if op in ("amax", "amin") else torch.float32 if in_dtype in LOW else in_dtype
        found += [(n, (n,), "uint8", f"{op}: {what} of gpu_reduce_kernel (Reduce.cuh)")
                  for n, what in _scratch(shape, strides, dims, in_dtype, acc, gpu, offset, out.dtype)]
        return found
    return temps
