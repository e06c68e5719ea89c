"""Simulated workloads per second through the whole sweep path vs the bare engine, one run.

    python benchmarks/sweep_speed.py

The sweep path includes the OOM-aware simulation under the target's cap, the CSV row
written and fsync'ed per workload, and results.json at the end (not the HTML report). The
goal is a ratio of at least 0.8.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sa_profiler.targets import gpus  # noqa: E402
from sa_profiler.engine import simulate  # noqa: E402
from sa_profiler.question import make_question  # noqa: E402
from sa_profiler.sweeps.sweep import Sweep, run  # noqa: E402


def main():
    spec = Sweep(make_question(gpus.lookup("a100-80gb")), [("reference", {}), ("sdpa", {}), ("chunked", {})],
                 ["float32", "float16"], ["forward", "train"], [64, 128], [(16, 16), (32, 32), (64, 64)], [1, 4])
    workloads = list(spec.workloads())
    simulate(workloads[0])  # warm-up
    start = time.perf_counter()
    for w in workloads:
        simulate(w)
    bare = len(workloads) / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        rows = run(spec, out)
        swept = len(rows) / (time.perf_counter() - start)
    print(f"{len(workloads)} workloads: bare engine {bare:.1f}/s, sweep path {swept:.1f}/s, "
          f"ratio {swept / bare:.2f} (goal >= 0.8)")


if __name__ == "__main__":
    main()
