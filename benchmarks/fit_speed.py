"""What a simulated training step costs against the same step run for real on this CPU.

    python benchmarks/fit_speed.py [--batch 32] [--repeats 3] [--models zoo|library|all]

`zoo`: a torchvision-style ResNet-50 (3x224x224) and a timm-style ViT-S/16 (3x224x224), both
from examples/zoo/. `library`: models as the libraries build them, by name, with their default
inputs (a padded mask for the text models): timm's ViT-S/16 and Swin-T, transformers' BERT-base,
ViT-base and GPT-2, and a diffusers conditional UNet (Stable Diffusion's layout at half its
channels, 32 x 32 latents). At the given batch: the wall time of `fit.run_step` on meta tensors
(the simulation `sa-profile fit` runs, targeting the CPU so the two steps are the same step)
and of the same two training steps run on this CPU's real tensors under the same tracker,
median of `--repeats`, in one run. Prints the ratio; the goal is a simulation under a fifth of
the real step (ratio <= 0.2). The peaks are checked equal, so the two did the same work.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402

from sa_profiler.models.fit import load, run_step  # noqa: E402

MODELS = [  # label, model, its arguments, inputs (None: the library model's default)
    ("ResNet-50", "examples/zoo/resnet.py:resnet50", {}, ["3x224x224"]),
    ("ViT-S/16", "examples/zoo/vit.py:vit_small", {}, ["3x224x224"]),
]
PADDED = ["input_ids=128:int64:range=0..30000", "attention_mask=128:int64:pad=0.25"]
LIBRARY = [
    ("timm ViT-S/16", "timm:vit_small_patch16_224", {}, None),
    ("timm Swin-T", "timm:swin_tiny_patch4_window7_224", {}, None),
    ("HF BERT-base", "transformers:bert", {}, PADDED),
    ("HF ViT-base", "transformers:vit", {}, None),
    ("HF GPT-2", "transformers:gpt2", {}, PADDED),
    ("SD UNet/2", "diffusers:UNet2DConditionModel",
     {"sample_size": 32, "block_out_channels": (160, 320, 640, 640), "cross_attention_dim": 768}, None),
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
    ap.add_argument("--models", choices=["zoo", "library", "all"], default="zoo")
    args = ap.parse_args(argv)
    chosen = {"zoo": MODELS, "library": LIBRARY, "all": MODELS + LIBRARY}[args.models]
    root = os.path.join(os.path.dirname(__file__), "..")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, batch {args.batch}, "
          f"median of {args.repeats}")
    print(f"{'model':14s} {'simulated':>10s} {'real CPU':>10s} {'ratio':>7s}  peak (both)")
    worst = 0.0
    for label, spec, model_args, shape in chosen:
        if spec.startswith("examples/"):
            spec = os.path.join(root, spec)
        factory = load(spec, dict(model_args))
        shape = shape or factory.default_inputs
        run_step(factory, shape, 1, None)  # first-call costs (imports, op registries) are not per step
        sim_s, sim = timed(lambda: run_step(factory, shape, args.batch, None), args.repeats)
        real_s, real = timed(lambda: run_step(factory, shape, args.batch, None, device="cpu"), args.repeats)
        if sim.peak_total != real.peak_total:
            raise SystemExit(f"{label}: simulated {sim.peak_total} B != measured {real.peak_total} B")
        ratio = sim_s / real_s
        worst = max(worst, ratio)
        print(f"{label:14s} {sim_s:9.2f}s {real_s:9.2f}s {ratio:7.3f}  {sim.peak_total / 2**30:.2f} GiB")
    verdict = "meets" if worst <= GOAL else "misses"
    print(f"worst ratio {worst:.3f}: {verdict} the goal (simulation <= {GOAL:g} x the real step)")


if __name__ == "__main__":
    main()
