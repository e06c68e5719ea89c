"""Simulated vs measured peak memory on the local CUDA card, for a grid of workloads.

    python benchmarks/validate_cuda.py --out reports/validation            # full grid
    python benchmarks/validate_cuda.py --grid heldout --out reports/validation # other shapes
    python benchmarks/validate_cuda.py --grid tiny --out /tmp/v            # dry run (CPU ok)

Writes `<out>/<gpu>-<torch version>.csv`: every Record field, simulated (with the catalogue
entry of this card) and measured side by side, one row per workload, flushed as it goes. The
grid covers every implementation and SDPA backend, fp32/fp16/bf16, forward and train. On a
machine without CUDA it compares the simulator with the CPU measurement instead.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import re
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sa_profiler.engine import Workload, measure, simulate  # noqa: E402

VARIANTS = [
    ("reference", {}),
    ("sdpa", {}),
    ("sdpa", {"backend": "efficient"}),
    ("sdpa", {"backend": "flash"}),
    ("sdpa", {"backend": "cudnn"}),
    ("sdpa", {"backend": "math"}),
    ("chunked", {"chunk": 1024}),
    ("chunked", {"chunk": 1024, "checkpoint": True}),
]
SHAPES = [  # batch, channels, height, width
    (1, 64, 16, 16), (8, 32, 16, 16), (4, 64, 32, 32), (16, 64, 32, 32), (2, 128, 64, 64),
    (1, 256, 64, 64), (4, 256, 32, 32), (2, 96, 48, 48), (1, 128, 128, 128), (1, 64, 100, 60),
]
TINY_SHAPES = [(1, 16, 8, 8), (2, 24, 6, 10)]
# shapes no rule was derived from (an out-of-sample check of the rules)
HELDOUT_SHAPES = [
    (3, 48, 20, 20), (2, 160, 40, 40), (6, 128, 24, 24), (1, 512, 32, 32), (1, 192, 96, 96),
    (2, 64, 80, 80), (12, 32, 28, 28), (1, 320, 48, 48), (5, 80, 36, 36),
]
DTYPES = ["float32", "float16", "bfloat16"]
MODES = ["forward", "train"]
FIELDS = ["key", "impl", "options", "batch", "channels", "height", "width", "tokens", "dtype", "mode", "target",
          "sim_status", "sim_backend", "sim_peak_bytes", "sim_baseline_bytes", "sim_time_s",
          "status", "backend", "peak_bytes", "baseline_bytes", "time_s", "time_method",
          "message", "device_name", "torch_version", "top_tensors_simulated"]


def rows(shapes, dtypes, target, budget_s):
    start = time.time()
    for (impl, opts), (b, c, h, w), dtype, mode in itertools.product(VARIANTS, shapes, dtypes, MODES):
        if time.time() - start > budget_s:
            print(f"time box of {budget_s:.0f} s reached; stopping", flush=True)
            return
        wl = Workload(impl, b, c, h, w, dtype, mode, target, opts)
        sim = simulate(wl)
        if target == "cpu" and dtype != "float32":
            continue
        meas = measure(wl, repeats=3)
        m = meas.to_row()
        yield {
            **{k: m[k] for k in ("key", "impl", "options", "batch", "channels", "height", "width", "tokens",
                                 "dtype", "mode", "target", "status", "backend", "peak_bytes",
                                 "baseline_bytes", "time_s", "time_method", "device_name", "torch_version")},
            "message": meas.message or sim.message,
            "sim_status": sim.status, "sim_backend": sim.backend, "sim_peak_bytes": sim.peak_bytes,
            "sim_baseline_bytes": sim.baseline_bytes, "sim_time_s": sim.time_s,
            "top_tensors_simulated": sim.to_row()["top_tensors"],
        }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="reports/validation")
    ap.add_argument("--grid", choices=["main", "heldout", "tiny"], default="main",
                    help="main: the grid the rules were checked on; heldout: other shapes; tiny: a dry run")
    ap.add_argument("--budget", type=float, default=420, help="time box in seconds")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    target = "cuda" if cuda else "cpu"
    device = torch.cuda.get_device_name() if cuda else "cpu"
    suffix = "" if args.grid == "main" else f"-{args.grid}"
    name = re.sub(r"[^A-Za-z0-9.]+", "-", f"{device}-{torch.__version__}{suffix}").strip("-").lower()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{name}.csv")
    worst = 0.0
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        writer.writeheader()
        shapes = {"main": SHAPES, "heldout": HELDOUT_SHAPES, "tiny": TINY_SHAPES}[args.grid]
        for row in rows(shapes, DTYPES, target, args.budget):
            writer.writerow(row)
            fh.flush()
            if row["status"] == "ok" and row["sim_status"] == "ok":
                err = abs(row["sim_peak_bytes"] - row["peak_bytes"])
                rel = err / max(row["peak_bytes"], 1)
                flag = "" if err <= max(0.02 * row["peak_bytes"], 4 * 2**20) else "  <-- off"
                worst = max(worst, rel)
                print(f"{row['key']:<70} meas {row['peak_bytes']:>13} sim {row['sim_peak_bytes']:>13} "
                      f"({rel:+.2%}) {row['backend']}/{row['sim_backend']}{flag}", flush=True)
            else:
                print(f"{row['key']:<70} {row['status']}/{row['sim_status']} {row['message'][:80]}", flush=True)
    print(f"wrote {path}; worst relative error {worst:.2%}")


if __name__ == "__main__":
    main()
