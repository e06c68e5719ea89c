"""What the caching allocator held when a predicted-to-fit batch ran out of memory.

    python benchmarks/oom_snapshot.py --out reports/validation

Runs a few workloads under a 12 GiB cap (`set_per_process_memory_fraction`) with the
allocator's history recorded, and writes, per workload, the allocator's segments at the end
(size, allocated part) and its alloc/free trace (sizes in order), next to what the
simulator's allocator model predicts for the same step. Used to check the model's
fragmentation against the real allocator.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sa_profiler.targets import gpus  # noqa: E402
from sa_profiler.engine import Workload, step  # noqa: E402

CASES = [("sdpa", {}, 55, 128, 256, 256, "float32", "forward"),
         ("reference", {}, 70, 64, 64, 64, "float32", "forward"),
         ("reference", {}, 60, 128, 64, 64, "float16", "train")]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/validation")
    args = ap.parse_args(argv)
    local = gpus.local()
    cap = 12 * 2**30 - 512 * 2**20
    result = []
    for impl, opts, b, c, h, w, dtype, mode in CASES:
        wl = Workload(impl, b, c, h, w, dtype, mode, "cuda", opts)
        torch.cuda.set_per_process_memory_fraction(cap / local.total_memory)
        torch.cuda.memory._record_memory_history(max_entries=100000, stacks="python")
        status = "ok"
        try:
            layer, x = step.make(wl, "cuda")
            step.run(layer, x, mode)
        except torch.cuda.OutOfMemoryError as err:
            status = "oom: " + str(err).splitlines()[0][:200]
        snap = torch.cuda.memory._snapshot()
        torch.cuda.memory._record_memory_history(enabled=None)
        trace = [{"action": e["action"], "size": e["size"]}
                 for e in snap["device_traces"][0] if e["action"] in ("alloc", "free_completed", "segment_alloc", "segment_free", "oom")]
        segs = [{"total": s["total_size"], "allocated": s["allocated_size"], "pool": s["segment_type"]}
                for s in snap["segments"]]
        stats = torch.cuda.memory_stats()
        result.append({"key": wl.key, "status": status, "cap": cap, "segments": segs, "trace": trace[-4000:],
                       "allocated_peak": stats["allocated_bytes.all.peak"], "reserved_peak": stats["reserved_bytes.all.peak"]})
        print(wl.key, status, "alloc peak", stats["allocated_bytes.all.peak"], "reserved peak", stats["reserved_bytes.all.peak"], flush=True)
        layer = x = None
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.set_per_process_memory_fraction(1.0)
    with open(os.path.join(args.out, "oom-snapshots.json"), "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()
