"""What a simulated training step costs against the same step run for real on this CPU.

    python benchmarks/fit_speed.py [--batch 32] [--repeats 3]

For a torchvision-style ResNet-50 (3x224x224) and a timm-style ViT-S/16 (3x224x224), both
from examples/zoo/, at the given batch: the wall time of `fit.run_step` on meta tensors (the
simulation `sa-profile fit` runs, targeting the CPU so the two steps are the same step) and of
the same two training steps run on this CPU's real tensors under the same tracker, median of
`--repeats`, in one run. Prints the ratio; the goal is a simulation under a fifth of the real
step (ratio <= 0.2). The peaks are checked equal, so the two did the same work.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402

from sa_profiler.fit import load, run_step  # noqa: E402

MODELS = [
    ("ResNet-50", "examples/zoo/resnet.py:resnet50", "3x224x224"),
    ("ViT-S/16", "examples/zoo/vit.py:vit_small", "3x224x224"),
]
GOAL = 0.2


def timed(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    root = os.path.join(os.path.dirname(__file__), "..")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, batch {args.batch}, "
          f"median of {args.repeats}")
    print(f"{'model':10s} {'simulated':>10s} {'real CPU':>10s} {'ratio':>7s}  peak (both)")
    worst = 0.0
    for label, spec, shape in MODELS:
        factory = load(os.path.join(root, spec.split(":")[0]) + ":" + spec.split(":")[1])
        run_step(factory, shape, 1, None)  # first-call costs (imports, op registries) are not per step
        sim_s, sim = timed(lambda: run_step(factory, shape, args.batch, None), args.repeats)
        real_s, real = timed(lambda: run_step(factory, shape, args.batch, None, device="cpu"), args.repeats)
        if sim.peak_total != real.peak_total:
            raise SystemExit(f"{label}: simulated {sim.peak_total} B != measured {real.peak_total} B")
        ratio = sim_s / real_s
        worst = max(worst, ratio)
        print(f"{label:10s} {sim_s:9.2f}s {real_s:9.2f}s {ratio:7.3f}  {sim.peak_total / 2**30:.2f} GiB")
    verdict = "meets" if worst <= GOAL else "misses"
    print(f"worst ratio {worst:.3f}: {verdict} the goal (simulation <= {GOAL:g} x the real step)")


if __name__ == "__main__":
    main()
