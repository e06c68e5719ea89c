"""Whole-model training steps on the local CUDA card vs `sa_profiler.fit`'s simulation.

    python benchmarks/validate_fit_cuda.py --out reports/validation

For each example model: two training steps (Adam, as `fit` runs them) on the card, the peak
of `max_memory_allocated` from before the first step (parameters, buffers, input and library
workspaces included), next to the simulated peak for this card. Writes
fit-<gpu>-<torch>.csv. Goal: within 5 %.
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sa_profiler import gpus  # noqa: E402
from sa_profiler.fit import load, run_step  # noqa: E402

CASES = [
    ("examples/sagan.py:Generator", {"ch": 32, "image_size": 64}, (128,), 16, None),
    ("examples/sagan.py:Generator", {"ch": 32, "image_size": 64}, (128,), 16, "fp16"),
    ("examples/sagan.py:Discriminator", {"ch": 32, "image_size": 64}, (3, 64, 64), 16, None),
    ("examples/classifier.py:resnet_attn", {"width": 64, "num_classes": 100}, (3, 128, 128), 8, None),
    ("examples/classifier.py:forum_cnn", {"channels": 64}, (64, 64, 64), 2, None),
]


def measured_peak(factory, shape, batch, amp):
    torch.manual_seed(0)
    model = factory().cuda().train()
    x = torch.randn(batch, *shape, device="cuda")
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scaler = torch.amp.GradScaler("cuda") if amp else None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        if amp:
            with torch.autocast("cuda", dtype=torch.float16):
                out = model(x)
            loss = (out[0] if isinstance(out, tuple) else out).float().mean()
            scaler.scale(loss).backward()
            del loss, out
            scaler.step(opt)
            scaler.update()
        else:
            out = model(x)
            loss = (out[0] if isinstance(out, tuple) else out).float().mean()
            del out
            loss.backward()
            del loss
            opt.step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del model, x, opt
    gc.collect()
    torch.cuda.empty_cache()
    return peak


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/validation")
    args = ap.parse_args(argv)
    gpu = gpus.local()
    path = os.path.join(args.out, f"fit-{gpu.key}-{torch.__version__.split('+')[0]}.csv")
    rows = []
    for spec, kwargs, shape, batch, amp in CASES:
        factory = load(spec, kwargs)
        sim = run_step(factory, shape, batch, gpu, amp=amp)
        meas = measured_peak(factory, shape, batch, amp)
        err = (sim.peak_total - meas) / meas
        rows.append({"model": spec, "args": kwargs, "input": "x".join(map(str, shape)), "batch": batch, "amp": amp or "",
                     "optimizer": "adam", "measured_peak": meas, "simulated_peak": sim.peak_total, "rel_error": err,
                     "gpu": gpu.name, "torch": torch.__version__})
        print(f"{spec:40s} amp={amp or '-':5s} measured {meas:>12} simulated {sim.peak_total:>12} ({err:+.2%})", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("wrote", path)


if __name__ == "__main__":
    main()
