"""End-to-end wall time of the headline command against a bare `import torch`, in one run.

    python benchmarks/cli_latency.py [--runs 5] [--base REV]

Each round runs, interleaved so that machine load hits all alike: `python -c "import torch"`;
the same import followed by `gc.freeze()`; each command with an empty answer cache (a fresh
question); and the same command again with the cache its first run filled (an identical repeated
question). Prints medians and the ratios to the bare import, against the goals: a fresh default
question at most 1.2x, a repeated one at most 1.1x. With `--base REV`, the same commands from
that commit's package (`git archive`) run in the same rounds, and each median is also given as
a ratio to the base's: a change's cost or gain, measured side by side. The machine's CUDA devices decide whether the
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
GOALS = {"fresh": 1.2, "repeated": 1.1}
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _timed(argv: list[str], env: dict, cwd: str = ROOT) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env, cwd=cwd)
    return time.perf_counter() - start


def _tree(rev: str, into: str) -> str:
    """The package as it was at `rev`, in a folder of its own (`python -m` finds it there first)."""
    folder = os.path.join(into, "base")
    os.makedirs(folder)
    archive = subprocess.run(["git", "archive", rev, "sa_profiler"], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
    return folder


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
    ap.add_argument("--base", metavar="REV", help="Also time the package as it was at this commit, side by side.")
    args = ap.parse_args()
    names = [args.only] if args.only else list(COMMANDS)
    bare, frozen, fresh, again = [], [], {n: [] for n in names}, {n: [] for n in names}
    base_fresh, base_again = {n: [] for n in names}, {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        base_tree = _tree(args.base, tmp) if args.base else None
        for r in range(args.runs):
            bare.append(_timed([sys.executable, "-c", "import torch"], dict(os.environ)))
            frozen.append(_timed([sys.executable, "-c", "import gc, torch; gc.freeze()"], dict(os.environ)))
            for n in names:
                cmd = [sys.executable, "-m", "sa_profiler.cli", *COMMANDS[n]]
                trees = [(ROOT, fresh, again, "")] + ([(base_tree, base_fresh, base_again, "base")] if base_tree else [])
                for cwd, first, repeat, tag in trees:
                    env = dict(os.environ, SA_PROFILER_CACHE=os.path.join(tmp, f"{n}-{r}{tag}"))
                    first[n].append(_timed(cmd, env, cwd))
                    repeat[n].append(_timed(cmd, env, cwd))
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
            kept = (base_fresh if label == "fresh" else base_again)[n]
            if kept:
                print(f"{'':<14} {label:<9} against {args.base}: median {statistics.median(kept):.2f} s, "
                      f"ratio {med / statistics.median(kept):.2f}x (pairs: median "
                      f"{statistics.median(a / b for a, b in zip(times, kept)):.2f}x)")
            if goal and label == "fresh":  # what the question adds to an import that pays no exit collection
                print(f"{'':<14} {'':<9} beyond the frozen import: {(med - base_frozen) / base:.2f}x the bare import "
                      f"(the goal allows {goal - 1:.1f}x)")


if __name__ == "__main__":
    main()
