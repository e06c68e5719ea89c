"""End-to-end wall time of the headline command against a bare `import torch`, in one run.

    python benchmarks/cli_latency.py [--runs 5]

Each round runs, interleaved so that machine load hits all alike: `python -c "import torch"`;
the same import followed by `gc.freeze()`; each command with an empty answer cache (a fresh
question); and the same command again with the cache its first run filled (an identical repeated
question). Prints medians and the ratios to the bare import, against the goals: a fresh default
question at most 1.5x, a repeated one at most 1.1x. The machine's CUDA devices decide whether the
cache is used at all (sa_profiler/advice/answer_cache.py); the script says so.

`sa-profile` freezes torch's objects out of the cyclic collector once torch is imported
(cli/common.py `_loaded_for_good`), which also spares it the collection over them at interpreter exit
that the bare import pays. The second baseline pays neither, so the ratio to it is the one
without that advantage, and the time beyond it, as a share of the bare import, is the cost of
everything but the import itself (the 1.5x goal allows 0.5x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

COMMANDS = {
    "default": ["--gpu-mem", "12G", "--shape", "128x256x256"],
    "--json": ["--gpu-mem", "12G", "--shape", "128x256x256", "--json"],
    # inference only: no training step (no checkpointed chunks, no backward)
    "forward": ["--gpu-mem", "12G", "--shape", "128x256x256", "--mode", "forward"],
    "t4 train fp16": ["--gpu", "t4", "--shape", "128x256x256", "--mode", "train", "--dtype", "fp16"],
}
GOALS = {"fresh": 1.5, "repeated": 1.1}


def _timed(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def simulations(argv: list[str]) -> int:
    """How many steps the simulator runs to answer `argv` (one memory tracker each), in-process."""
    import contextlib
    import io

    from sa_profiler.cli import cli
    from sa_profiler.engine import tracker

    made = []
    init = tracker.MemoryTracker.__init__

    def counted(self, *args, **kwargs):
        made.append(1)
        init(self, *args, **kwargs)

    tracker.MemoryTracker.__init__ = counted
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            cli.main(args=argv, prog_name="sa-profile")
    finally:
        tracker.MemoryTracker.__init__ = init
    return len(made)


def main():
    from sa_profiler.advice.answer_cache import cuda_possible

    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", choices=list(COMMANDS), help="Time one command (default: all).")
    args = ap.parse_args()
    names = [args.only] if args.only else list(COMMANDS)
    bare, frozen, fresh, again = [], [], {n: [] for n in names}, {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.runs):
            bare.append(_timed([sys.executable, "-c", "import torch"], dict(os.environ)))
            frozen.append(_timed([sys.executable, "-c", "import gc, torch; gc.freeze()"], dict(os.environ)))
            for n in names:
                env = dict(os.environ, SA_PROFILER_CACHE=os.path.join(tmp, f"{n}-{r}"))
                cmd = [sys.executable, "-m", "sa_profiler.cli", *COMMANDS[n]]
                fresh[n].append(_timed(cmd, env))
                again[n].append(_timed(cmd, env))
    base, base_frozen = statistics.median(bare), statistics.median(frozen)
    print(f"bare `import torch`: median {base:.2f} s over {args.runs} runs")
    print(f"`import torch` then `gc.freeze()`: median {base_frozen:.2f} s")
    if cuda_possible():
        print("note: torch could see a CUDA device here, so answers are measured and never cached")
    for n in names:
        print(f"{n:<14} {simulations(COMMANDS[n])} simulated steps")
        for label, times in (("fresh", fresh[n]), ("repeated", again[n])):
            med = statistics.median(times)
            goal = GOALS[label] if n == "default" else None
            verdict = f"  goal <= {goal:.1f}x: {'met' if med / base <= goal else 'NOT met'}" if goal else ""
            print(f"{n:<14} {label:<9} median {med:.2f} s (min {min(times):.2f}, max {max(times):.2f})  "
                  f"ratio {med / base:.2f}x{verdict}  (to the frozen import: {med / base_frozen:.2f}x)")
            if goal and label == "fresh":  # what the question adds to an import that pays no exit collection
                print(f"{'':<14} {'':<9} beyond the frozen import: {(med - base_frozen) / base:.2f}x the bare import "
                      f"(the goal allows {goal - 1:.1f}x)")


if __name__ == "__main__":
    main()
