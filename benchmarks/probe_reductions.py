"""Scratch memory of CUDA reductions (sum, mean, amax) on the local card, by shape and dtype.

    python benchmarks/probe_reductions.py --out reports/validation

A reduction that splits each output over several blocks allocates a staging buffer and
semaphores from the caching allocator for the launch (ATen/native/cuda/Reduce.cuh,
`gpu_reduce_kernel`: `config.global_memory_size()` and `config.semaphore_size()`): bias
gradients (`grad.sum(0)` over a batch of tokens) make tens of MiB of it. Each row is one
reduction: `transient` = peak during the op - allocated after it. Writes
reductions-<gpu>-<torch>.csv.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sa_profiler.targets import gpus  # noqa: E402

ROWS = (1, 7, 64, 1000, 4096, 6304, 16384, 65536, 262144)
COLS = (1, 3, 64, 192, 384, 1536, 4096)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def cases():
    for r in ROWS:
        for c in COLS:
            if r * c > 2 ** 28:
                continue
            for dt in DTYPES:
                yield "sum", (r, c), (0,), dt
                yield "sum", (r, c), (1,), dt
                yield "sum", (r, c), None, dt
                yield "mean", (r, c), (0,), dt
    for shape, dims in [((32, 197, 384), (0, 1)), ((16, 256, 64, 64), (0, 2, 3)), ((16, 256, 64, 64), (2, 3)),
                        ((8, 3, 224, 224), None), ((1024, 16, 192), (0, 1)), ((64, 128, 128, 128), (0, 2, 3))]:
        for dt in DTYPES:
            yield "sum", shape, dims, dt


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/validation")
    args = ap.parse_args(argv)
    gpu = gpus.local()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"reductions-{gpu.key}-{torch.__version__.split('+')[0]}.csv")
    with open(path + ".tmp", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["op", "shape", "dims", "dtype", "transient", "gpu", "sms", "torch"])
        for op, shape, dims, dt in cases():
            x = torch.randn(shape, device="cuda", dtype=dt)
            f = getattr(torch, op)
            f(x) if dims is None else f(x, dims)  # warm-up
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            out = f(x) if dims is None else f(x, dims)
            torch.cuda.synchronize()
            transient = torch.cuda.max_memory_allocated() - torch.cuda.memory_allocated()
            w.writerow([op, "x".join(map(str, shape)), "" if dims is None else ",".join(map(str, dims)),
                        str(dt)[6:], transient, gpu.name, torch.cuda.get_device_properties(0).multi_processor_count,
                        torch.__version__])
            del x, out
        torch.cuda.empty_cache()
    os.replace(path + ".tmp", path)
    print("wrote", path)


if __name__ == "__main__":
    main()
