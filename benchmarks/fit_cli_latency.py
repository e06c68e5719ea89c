"""`sa-profile fit` on library models against importing torch and the model's library, in one run.

    python benchmarks/fit_cli_latency.py [--runs 3] [--batch 8]

For each library model named as a user names it (timm, transformers, diffusers), interleaved
so that machine load hits all alike: a bare `python -c` that imports torch, the library and the
model's class (the floor no answer can go under), and `sa-profile fit NAME --gpu t4 --batch B`
with the answer cache off (a fresh question). Prints medians and the time beyond the import;
the goal is an answer within 1 s of the import.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

MODELS = [  # name, the import that loads its library and class
    ("timm:vit_small_patch16_224", "import torch, timm; timm.create_model"),
    ("timm:swin_tiny_patch4_window7_224", "import torch, timm; timm.create_model"),
    ("transformers:bert", "import torch, transformers; transformers.BertModel"),
    ("transformers:vit", "import torch, transformers; transformers.ViTModel"),
    ("transformers:gpt2", "import torch, transformers; transformers.GPT2Model"),
    ("diffusers:UNet2DModel", "import torch, diffusers; diffusers.UNet2DModel"),
]
GOAL_S = 1.0


def timed(argv, env) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args(argv)
    env = {**os.environ, "SA_PROFILER_CACHE": "off"}
    times = {name: ([], []) for name, _ in MODELS}
    for _ in range(args.runs):
        for name, imports in MODELS:
            times[name][0].append(timed([sys.executable, "-c", imports], env))
            times[name][1].append(timed([sys.executable, "-m", "sa_profiler.cli", "fit", name, "--gpu", "t4",
                                         "--batch", str(args.batch)], env))
    print(f"median of {args.runs}, batch {args.batch}, target t4")
    print(f"{'model':36s} {'import':>8s} {'fit':>8s} {'beyond':>8s}")
    worst = 0.0
    for name, (imp, fit) in times.items():
        beyond = statistics.median(fit) - statistics.median(imp)
        worst = max(worst, beyond)
        print(f"{name:36s} {statistics.median(imp):7.2f}s {statistics.median(fit):7.2f}s {beyond:7.2f}s")
    print(f"worst {worst:.2f} s beyond the import: {'meets' if worst <= GOAL_S else 'misses'} the goal (<= {GOAL_S:g} s)")


if __name__ == "__main__":
    main()
