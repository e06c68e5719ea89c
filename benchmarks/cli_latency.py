"""End-to-end wall time of the headline command (a fresh process, torch import included).

    python benchmarks/cli_latency.py [--runs 5]

Prints the median of several runs of the default command and of `--json`, and each as a
ratio to the 3-second goal (below 1.0 meets it).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "default": ["--gpu-mem", "12G", "--shape", "128x256x256"],
    "--json": ["--gpu-mem", "12G", "--shape", "128x256x256", "--json"],
    "t4 train fp16": ["--gpu", "t4", "--shape", "128x256x256", "--mode", "train", "--dtype", "fp16"],
}
GOAL_S = 3.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    for name, argv in COMMANDS.items():
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "sa_profiler.cli", *argv], check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        med = statistics.median(times)
        print(f"{name:<16} median {med:.2f} s over {args.runs} runs  (min {min(times):.2f}, max {max(times):.2f})  "
              f"ratio to {GOAL_S:.0f} s: {med / GOAL_S:.2f}")


if __name__ == "__main__":
    main()
