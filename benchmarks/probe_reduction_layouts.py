"""Reduction scratch beyond contiguous sums: strided, misaligned and huge inputs, amax/amin, dtype=.

    python benchmarks/probe_reduction_layouts.py --out reports/validation

Each row is one reduction measured as benchmarks/probe_reductions.py does (`transient` = peak
during the op - allocated after it) beside what engine/reduce.py predicts for the local card
(`predicted`: the kernel's buffer and semaphores, each rounded to 512 bytes). Writes
reduction-layouts-<gpu>-<torch>.csv and prints the rows that differ.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sa_profiler.targets import gpus  # noqa: E402
from sa_profiler.engine.allocator import round_size  # noqa: E402
from sa_profiler.engine.reduce import reduction_scratch  # noqa: E402

F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32


def _input(shape, dtype, layout):
    """(tensor, storage offset in elements); the base is a fresh, 512-byte aligned block."""
    if layout == "t":  # a transposed view of a contiguous (shape[1], shape[0]) tensor
        return torch.randn(shape[::-1], device="cuda", dtype=dtype).t(), 0
    if layout == "cl":
        return torch.randn(shape, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last), 0
    if layout.startswith("off"):
        k = int(layout[3:])
        n = 1
        for s in shape:
            n *= s
        return torch.randn(n + k, device="cuda", dtype=dtype)[k:].view(shape), k
    return torch.randn(shape, device="cuda", dtype=dtype), 0


def cases():
    for dt in (F32, F16, BF16):
        for op in ("amax", "amin"):
            yield op, (6304, 1536), (0,), dt, "c", None
            yield op, (65536, 64), (0,), dt, "c", None
            yield op, (1000, 4096), None, dt, "c", None
        yield "sum", (6304, 1536), (1,), dt, "t", None
        yield "sum", (1536, 6304), (0,), dt, "t", None
        for k in (1, 2, 3, 4):
            yield "sum", (4096, 64), (0,), dt, f"off{k}", None
            yield "sum", (6304, 1536), (0,), dt, f"off{k}", None
        yield "sum", (16, 256, 64, 64), (0, 2, 3), dt, "cl", None
        yield "sum", (16, 256, 64, 64), (2, 3), dt, "cl", None
        yield "mean", (32, 197, 384), (0, 1), dt, "c", None
        yield "sum", (32, 197, 384), (2,), dt, "c", None
    for dt in (F16, BF16):
        yield "sum", (6304, 1536), (0,), dt, "c", F32
        yield "mean", (6304, 384), (0,), dt, "c", F32
    # beyond 32-bit indexing (2.5 GB inputs): launched in halves, plus a float accumulation
    # buffer for 16-bit outputs
    for dims in ((0,), (1,), None):
        yield "sum", (600000, 1024), dims, F32, "c", None
    for op, dims, dt, out_dtype in (("sum", (0,), F16, None), ("sum", (1,), F16, None), ("sum", None, BF16, None),
                                    ("mean", (0,), BF16, None), ("amax", (0,), BF16, None), ("sum", (0,), F16, F32)):
        yield op, (1200000, 1024), dims, dt, "c", out_dtype


def acc_dtype(op, in_dtype):
    # amax/amin: max_values_kernel_cuda_impl<scalar_t> (acc_t = scalar_t); sum/mean: float for
    # half, bfloat16 and float (sum_functor / mean_kernel_impl<scalar_t, float>)
    return in_dtype if op in ("amax", "amin") else torch.float32


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/validation")
    args = ap.parse_args(argv)
    gpu = gpus.local()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"reduction-layouts-{gpu.key}-{torch.__version__.split('+')[0]}.csv")
    rows = []
    for op, shape, dims, dt, layout, out_dtype in cases():
        x, offset = _input(shape, dt, layout)
        kw = {} if out_dtype is None else {"dtype": out_dtype}
        f = getattr(torch, op)

        def run():
            return f(x, **kw) if dims is None else f(x, dims, **kw)
        run()  # warm-up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        out = run()
        torch.cuda.synchronize()
        transient = torch.cuda.max_memory_allocated() - torch.cuda.memory_allocated()
        scratch = reduction_scratch(tuple(x.shape), x.stride(), dims, dt, acc_dtype(op, dt), gpu, offset, out_dtype)
        rows.append([op, "x".join(map(str, shape)), "" if dims is None else ",".join(map(str, dims)), str(dt)[6:],
                     layout, "" if out_dtype is None else str(out_dtype)[6:], ",".join(map(str, x.stride())), offset,
                     transient, sum(round_size(b) for b in scratch), gpu.name, gpu.sms, torch.__version__])
        del out
    torch.cuda.empty_cache()
    with open(path + ".tmp", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["op", "shape", "dims", "dtype", "layout", "out_dtype", "strides", "storage_offset", "transient",
                    "predicted", "gpu", "sms", "torch"])
        w.writerows(rows)
    os.replace(path + ".tmp", path)
    differ = [r for r in rows if r[8] != r[9]]
    for r in differ:
        print("differs:", r[:10])
    print(f"wrote {path}: {len(rows) - len(differ)} of {len(rows)} rows as predicted")


if __name__ == "__main__":
    main()
