"""How long `plan` takes: a plan for each zoo model and three library models (timm, transformers,
diffusers) on a T4, against the 60 s goal, with the steps simulated per plan.

    python benchmarks/plan_speed.py                 # every model below
    python benchmarks/plan_speed.py --only vit_small --only bert

Prints one line per model: the seconds the plan took, its ratio to the goal (measured in this
run), the steps simulated, the plans that fit and the top one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sa_profiler.models.fit import load, parse_inputs  # noqa: E402
from sa_profiler.models.plan import plan  # noqa: E402
from sa_profiler.question import make_question  # noqa: E402

GOAL_S = 60.0
# (name, model, factory arguments, inputs, global batch)
MODELS = [
    ("vit_small", "examples/zoo/vit.py:vit_small", {}, ["3x224x224"], 64),
    ("unet", "examples/zoo/unet.py:unet", {}, ["3x64x64", "timestep=scalar:int64"], 32),
    ("cnn_mha", "examples/zoo/mha.py:cnn_mha", {}, ["3x64x64"], 64),
    ("bert_mini", "examples/zoo/bert.py:bert_mini", {}, ["input_ids=512:int64", "attention_mask=512:int64"], 32),
    ("sagan_repo-G", "examples/zoo/sagan_repo/sagan_models.py:Generator", {"batch_size": 64, "image_size": 64},
     ["128"], 64),
    ("resnet50", "examples/zoo/resnet.py:resnet50", {}, ["3x224x224"], 64),
    ("sagan-G", "examples/sagan.py:Generator", {}, ["128"], 64),
    ("forum_cnn", "examples/classifier.py:forum_cnn", {}, ["128x256x256"], 16),
    ("timm:vit_small", "timm:vit_small_patch16_224", {}, None, 64),
    ("transformers:bert", "transformers:bert", {"num_hidden_layers": 4}, ["input_ids=512:int64",
                                                                       "attention_mask=512:int64:pad=0.25"], 32),
    ("diffusers:UNet2DCondition", "diffusers:UNet2DConditionModel", {"sample_size": 32}, None, 8),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", help="A model's name from the list (repeatable).")
    parser.add_argument("--gpu", default="t4")
    args = parser.parse_args()
    question = make_question(args.gpu)
    worst = 0.0
    for name, spec, kwargs, inputs, batch in MODELS:
        if args.only and name not in args.only:
            continue
        factory = load(spec, kwargs)
        specs = parse_inputs(inputs or list(factory.default_inputs))
        start = time.perf_counter()
        p = plan(factory, specs, batch, question, name=name)
        seconds = time.perf_counter() - start
        worst = max(worst, seconds / GOAL_S)
        top = "; ".join(p.top.config.changes(p.base)) if p.top else "nothing fits"
        print(f"{name:28} batch {batch:3}  {seconds:6.1f} s  ratio {seconds / GOAL_S:4.2f} of the {GOAL_S:.0f} s goal  "
              f"{p.simulated:3} steps simulated  {len(p.plans):2} plans  top: {top}", flush=True)
    print(f"worst ratio to the goal: {worst:.2f} ({'met' if worst <= 1 else 'NOT met'})")


if __name__ == "__main__":
    main()
