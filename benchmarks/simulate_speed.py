"""Simulations per second for each implementation, at the forum shape (1 x 128 x 256 x 256).

    python benchmarks/simulate_speed.py

The reference layer's attention matrices are 17 GB each at this shape; a simulation runs on
meta tensors, so it costs milliseconds and no memory.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sa_profiler.engine import Workload  # noqa: E402
from sa_profiler.engine.simulate import simulations_per_second  # noqa: E402

CASES = [("reference", {}), ("sdpa", {}), ("sdpa", {"backend": "flash"}), ("chunked", {"chunk": 4096}),
         ("chunked", {"chunk": 4096, "checkpoint": True})]


def main():
    print(f"{'implementation':<36} {'mode':<8} {'target':<7} {'sims/s':>8}")
    for impl, opts in CASES:
        for mode in ("forward", "train"):
            for target, dtype in (("t4", "float32"), ("a100", "float16")):
                w = Workload(impl, 1, 128, 256, 256, dtype, mode, target, opts)
                rate = simulations_per_second(w, seconds=0.5)
                print(f"{w.label:<36} {mode:<8} {target:<7} {rate:>8.1f}")


if __name__ == "__main__":
    main()
