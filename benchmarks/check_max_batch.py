"""Predicted vs actual largest batch on the local CUDA card, and on an emulated 12 GiB card.

    python benchmarks/check_max_batch.py --out reports/validation

For each case the simulator predicts the largest safe batch (5 % headroom, what `sa-profile`
recommends) and the largest batch with no headroom. The latter is run for real, then one
more: the largest batch that ran is found with at most one real OOM unless the prediction
was too high. The emulated card caps the allocator at 12 GiB minus the CUDA context
(`set_per_process_memory_fraction`), as a real 12 GiB card would.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sa_profiler.targets import gpus  # noqa: E402
from sa_profiler.engine import Workload, measure  # noqa: E402
from sa_profiler.advice.recommend import profile_row, total_bytes  # noqa: E402
from sa_profiler.question import make_question  # noqa: E402

CASES = [  # target, impl, options, dtype, mode, (C, H, W)
    ("12G", "sdpa", {}, "float16", "train", (128, 256, 256)),
    ("12G", "sdpa", {}, "float32", "forward", (128, 256, 256)),
    ("12G", "chunked", {"chunk": 4096, "checkpoint": True}, "float16", "train", (128, 256, 256)),
    ("12G", "reference", {}, "float16", "train", (128, 64, 64)),
    ("12G", "reference", {}, "float32", "forward", (64, 64, 64)),
    ("local", "sdpa", {}, "float16", "train", (64, 128, 128)),
    ("local", "reference", {}, "float16", "train", (64, 128, 128)),
    ("local", "chunked", {"chunk": 2048, "checkpoint": True}, "bfloat16", "train", (64, 128, 128)),
]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/validation")
    ap.add_argument("--bisect", action="store_true", help="also find the true largest batch by bisection")
    ap.add_argument("--only", choices=["12G", "local"], help="run only the cases of one target")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    local = gpus.local()
    path = os.path.join(args.out, f"max-batch-{local.key}-{torch.__version__.split('+')[0]}.csv")
    fields = ["target", "impl", "options", "dtype", "mode", "channels", "height", "width",
              "predicted_max_batch", "predicted_no_headroom", "largest_ran", "first_oom", "ooms",
              "measured_total_at_largest", "simulated_total_at_largest", "usable_bytes", "cap_bytes",
              "true_largest", "bisect_runs", "reserved_at_oom"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fields)
        writer.writeheader()
        for tname, impl, opts, dtype, mode, (c, h, w) in CASES:
            if args.only and tname != args.only:
                continue
            # the 12 GiB card is this card's architecture with 12 GiB, so the backends agree
            gpu = gpus.resized(local, 12 * 2**30) if tname == "12G" else local
            key = gpu.key if tname == "12G" else "cuda"
            safe = profile_row(make_question(gpu), impl, opts, dtype, mode, c, h, w, None)
            bare = profile_row(make_question(gpu, 0), impl, opts, dtype, mode, c, h, w, None)
            b = bare.max_batch
            ooms, largest, first_oom, meas_ok = 0, 0, None, None

            def run(batch):
                return measure(Workload(impl, batch, c, h, w, dtype, mode, key, opts), repeats=1)

            rec = run(b) if b else None
            if rec is not None and rec.status == "ok":
                largest, meas_ok = b, rec
                above = run(b + 1)  # expected to be the one real OOM
                if above.status == "ok":
                    largest, meas_ok = b + 1, above  # the prediction was low; stop here
                else:
                    ooms, first_oom = 1, b + 1
            elif rec is not None:
                ooms, first_oom = 1, b
                for lower in (b - 1, b - 2, b * 3 // 4, b // 2, b // 4):  # the prediction was high
                    if lower < 1:
                        break
                    rec = run(lower)
                    if rec.status == "ok":
                        largest, meas_ok = lower, rec
                        break
                    ooms += 1
            # then, to know how far off the prediction was, bisect to the true largest batch
            lo, hi, runs, reserved_at_oom = largest, first_oom, 0, None
            while args.bisect and lo and hi and hi - lo > 1:
                mid = (lo + hi) // 2
                rec = run(mid)
                runs += 1
                if rec.status == "ok":
                    lo = mid
                else:
                    hi = mid
                    reserved_at_oom = rec.message[:160]
            sim_at = bare.at_batch if largest and largest == bare.max_batch else None
            row = {"target": gpu.name, "impl": impl, "options": opts, "dtype": dtype, "mode": mode, "channels": c,
                   "height": h, "width": w, "predicted_max_batch": safe.max_batch,
                   "predicted_no_headroom": bare.max_batch, "largest_ran": largest, "first_oom": first_oom,
                   "ooms": ooms, "measured_total_at_largest": total_bytes(meas_ok) if meas_ok else None,
                   "simulated_total_at_largest": total_bytes(sim_at) if sim_at else None,
                   "usable_bytes": make_question(gpu).usable, "cap_bytes": gpu.usable_memory,
                   "true_largest": lo if args.bisect else None, "bisect_runs": runs, "reserved_at_oom": reserved_at_oom}
            writer.writerow(row)
            fh.flush()
            print(row, flush=True)
    print("wrote", path)


if __name__ == "__main__":
    main()
