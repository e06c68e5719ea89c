"""Rows per second through Ray vs the local executor for one simulated grid, in one run.

    python benchmarks/ray_overhead.py [--cpus N] [--address auto|HOST:PORT]

Both sweeps write the same rows (checked). The local executor runs one workload at a time in
this process; Ray runs one task per workload on N CPUs (default: all of this machine's, on a
local cluster started here). Reported: the cluster's start-up, the first Ray sweep (workers
importing torch included) and a second, warm one; the ratio is warm Ray rows/s over local
rows/s. Above 1 means Ray's parallelism outweighs its per-task cost.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sa_profiler.targets import gpus  # noqa: E402
from sa_profiler.sweeps.executors import RayExecutor  # noqa: E402
from sa_profiler.question import make_question  # noqa: E402
from sa_profiler.sweeps.sweep import Sweep, run  # noqa: E402


def grid() -> Sweep:
    return Sweep(make_question(gpus.lookup("a100-80gb")), [("reference", {}), ("sdpa", {}), ("chunked", {})],
                 ["float32", "float16"], ["forward", "train"], [64, 128], [(16, 16), (32, 32), (64, 64)], [1, 4])


def timed(executor=None) -> tuple[list[dict], float]:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        rows = run(grid(), out, executor=executor)
        return rows, time.perf_counter() - start


def same(a: list[dict], b: list[dict]) -> bool:
    strip = lambda rows: sorted(tuple(sorted(r.items())) for r in rows)  # noqa: E731
    return strip(a) == strip(b)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--address", default=None)
    args = parser.parse_args()

    timed()  # warm-up of this process (imports, op registries)
    local, t_local = timed()
    start = time.perf_counter()
    executor = RayExecutor(args.address, init_kwargs={} if args.address else
                           {"num_cpus": args.cpus, "include_dashboard": False})
    t_start = time.perf_counter() - start
    cold, t_cold = timed(executor)
    warm, t_warm = timed(executor)
    n = len(local)
    assert same(local, cold) and same(local, warm), "Ray and local rows differ"
    local_rate, warm_rate = n / t_local, n / t_warm
    print(f"{n} simulated workloads, Ray on {executor.cpus} CPUs (this machine: {os.cpu_count()} cores)")
    print(f"local executor      {local_rate:7.1f} rows/s")
    print(f"Ray, cold workers   {n / t_cold:7.1f} rows/s (cluster start-up {t_start:.1f} s not included)")
    print(f"Ray, warm workers   {warm_rate:7.1f} rows/s")
    print(f"ratio Ray/local (warm) {warm_rate / local_rate:.2f}; rows identical: yes")


if __name__ == "__main__":
    main()
