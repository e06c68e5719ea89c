"""Per-op memory on the local CUDA card vs the simulator's view of the same op.

    python benchmarks/probe_cuda_ops.py --out reports/validation

For a few training and forward steps of each implementation/backend, every aten op runs
between two synchronisations with the peak counter reset, which shows what the op allocated
that no dispatch mode can see: `hidden_transient` = op peak - allocated after the op, and
`hidden_kept` = (allocated after - before) - the op's new output storages. The simulator's
per-op log of the same step stands beside it (op by op, in order), so a rule in
sa_profiler/engine/rules.py can be checked against each op that needs one.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import weakref

import torch
from torch.utils._pytree import tree_flatten
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sa_profiler.attention import backends  # noqa: E402
from sa_profiler.engine import Workload
from sa_profiler.engine import card_keys, step  # noqa: E402
from sa_profiler.engine.allocator import CudaCachingAllocator, round_size  # noqa: E402
from sa_profiler.engine.rules import CudaRules  # noqa: E402
from sa_profiler.engine.tracker import MemoryTracker  # noqa: E402

WORKLOADS = [
    ("reference", {}, (2, 64, 32, 32)), ("reference", {}, (1, 128, 64, 64)), ("reference", {}, (2, 64, 24, 24)),
    ("sdpa", {"backend": "efficient"}, (2, 64, 32, 32)), ("sdpa", {"backend": "efficient"}, (2, 256, 32, 32)),
    ("sdpa", {"backend": "efficient"}, (1, 128, 64, 64)),
    ("sdpa", {"backend": "flash"}, (2, 64, 32, 32)), ("sdpa", {"backend": "flash"}, (1, 128, 64, 64)),
    ("sdpa", {"backend": "cudnn"}, (2, 64, 32, 32)), ("sdpa", {"backend": "cudnn"}, (1, 128, 64, 64)),
    ("sdpa", {"backend": "math"}, (2, 64, 32, 32)),
    ("chunked", {"chunk": 512}, (1, 128, 64, 64)), ("chunked", {"chunk": 512, "checkpoint": True}, (1, 128, 64, 64)),
]


# the memory-efficient backward with value head sizes above 128 (fp16/bf16 keeps dK/dV
# accumulators), and a few fp32 ones, across sequence lengths and batches
EFFICIENT = [("sdpa", {"backend": "efficient"}, (b, c, r, r))
             for c in (160, 192, 256, 320, 512) for r in (32, 48, 96) for b in (1, 3)]
EFFICIENT += [("sdpa", {"backend": "efficient"}, (b, c, r, r)) for c in (32, 96, 128) for r in (24, 48) for b in (1, 6)]


class Probe(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.rows = []
        self._seen = weakref.WeakSet()
        self.step = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = func(*args, **kwargs)
        torch.cuda.synchronize()
        peak, after = torch.cuda.max_memory_allocated(), torch.cuda.memory_allocated()
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        visible = 0
        for t in outs:
            if t.is_cuda and t.untyped_storage() not in self._seen:
                self._seen.add(t.untyped_storage())
                visible += round_size(t.untyped_storage().nbytes()) if t.untyped_storage().nbytes() else 0
        ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        self.rows.append({
            "step": self.step, "op": func.overloadpacket.__name__,
            "inputs": ";".join(f"{tuple(t.shape)}:{str(t.dtype)[6:]}:{t.stride()}:{'c' if t.is_contiguous() else 'nc'}:{t.device.type}" for t in ins),
            "outputs": ";".join(f"{tuple(t.shape)}:{str(t.dtype)[6:]}:{t.stride()}:{t.device.type}" for t in outs),
            "visible": visible, "delta": after - before, "allocated": after, "hidden_kept": after - before - visible,
            "hidden_transient": peak - after,
        })
        return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/validation")
    ap.add_argument("--set", choices=["main", "efficient"], default="main")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    gpu = card_keys.resolve("cuda")
    path = os.path.join(args.out, "probe-ops.csv" if args.set == "main" else "probe-efficient.csv")
    workloads = WORKLOADS if args.set == "main" else EFFICIENT
    with open(path, "w", newline="") as fh:
        writer = None
        for impl, opts, (b, c, h, w) in workloads:
            for dtype in ("float16", "float32"):
                for mode in (("train", "forward") if args.set == "main" else ("train",)):
                    wl = Workload(impl, b, c, h, w, dtype, mode, "cuda", opts)
                    try:
                        layer, x = step.make(wl, "cuda")
                        step.run(layer, x, mode)  # warm-up: workspaces, handles
                        step.clear_grads(layer, x)
                        probe = Probe()
                        with probe:
                            step.run(layer, x, mode)
                    except Exception as err:  # an unsupported combination
                        print(wl.key, "skipped:", str(err).splitlines()[0][:100])
                        continue
                    tracker = MemoryTracker(CudaCachingAllocator(), "meta", rules=CudaRules(gpu))
                    tracker.op_log = []
                    with backends.simulating(gpu.caps()):
                        ml, mx = step.make(wl, "meta")
                        tracker.add_baseline(list(ml.parameters()) + [mx])
                        with tracker:
                            step.run(ml, mx, mode)
                    sim = tracker.op_log
                    for i, row in enumerate(probe.rows):
                        s = sim[i] if i < len(sim) else ("", None, None)
                        row = {"key": wl.key, "index": i, **row, "sim_op": s[0], "sim_visible": s[1], "sim_hidden": s[2]}
                        if writer is None:
                            writer = csv.DictWriter(fh, list(row))
                            writer.writeheader()
                        writer.writerow(row)
                    fh.flush()
                    hidden = sum(r["hidden_transient"] + max(r["hidden_kept"], 0) for r in probe.rows)
                    print(f"{wl.key}: {len(probe.rows)} ops (sim {len(sim)}), hidden bytes {hidden}", flush=True)
                    del layer, x, probe
                    torch.cuda.empty_cache()
    print("wrote", path)


if __name__ == "__main__":
    main()
