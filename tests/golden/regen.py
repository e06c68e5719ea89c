"""The headline answers, pinned: regenerate tests/golden/answers.json after a change that moves them.

    python tests/golden/regen.py

Each entry is a command of the README (or the forum case in every dtype and mode) run through
the CLI's JSON output, reduced to its answers: bytes, batches, fits, backends, time estimates.
tests/test_golden.py fails while today's answers differ from the file; a commit that
regenerates it says why the numbers moved.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

GOLDEN = Path(__file__).with_name("answers.json")
ROOT = Path(__file__).resolve().parent.parent.parent

# the torch whose choices the table pins (SDPA backend selection and the autograd formulas that
# changed: sa_profiler/torch_compat/), so that every torch in the supported range gives it
TORCH = "2.13"

FORUM = ["--shape", "128x256x256", "--mode", "both", "--impl", "reference,sdpa,chunked,pooled", "--json"]
COMMANDS = {  # every dtype the card runs (a T4 has no bfloat16), both modes
    "forum on a T4": ["--gpu", "t4", "--dtype", "fp32,fp16", *FORUM],
    "forum on a 12 GiB card": ["--gpu-mem", "12G", "--dtype", "fp32,fp16,bf16", *FORUM],
    "README headline": ["--gpu", "t4", "--shape", "128x256x256", "--mode", "train", "--dtype", "fp16", "--json"],
    "README fit forum_cnn": ["fit", "examples/classifier.py:forum_cnn", "--input", "128x256x256", "--gpu", "t4", "--json"],
    "README fit Generator": ["fit", "examples/sagan.py:Generator", "--input", "128", "--batch", "64", "--gpu", "t4",
                             "--optimizer", "adam", "--json"],
    "README fit resnet_attn": ["fit", "examples/classifier.py:resnet_attn", "--input", "3x224x224", "--batch", "32",
                               "--gpu-mem", "12G", "--amp", "fp16", "--find-max-batch", "--json"],
}


def _advice(doc: dict) -> dict:
    rows = {}
    for r in doc["rows"]:
        key = f"{r['label']} {r['dtype']} {r['mode']}"
        rows[key] = {k: r[k] for k in ("backend", "status", "peak_bytes_per_image", "max_batch", "peak_bytes_at_batch",
                                       "time_s", "fits")}
    rec = {m: {k: r[k] for k in ("impl", "options", "backend", "dtype", "batch")} for m, r in doc["recommendations"].items()}
    alt = {x["what"]: {"peak_bytes_per_image": x["peak_bytes_per_image"], "max_batch": x["max_batch"]}
           for x in doc["alternatives"]}
    return {"usable_bytes": doc["target"]["usable_bytes"], "rows": rows, "recommendations": rec,
            "why_peak_bytes": doc["why"]["peak_bytes"], "alternatives": alt}


def _fit(doc: dict) -> dict:
    keep = ("status", "peak_bytes", "baseline_bytes", "fits", "breakdown", "attention_bytes")
    out = {k: doc[k] for k in ("usable_bytes", "max_batch", *keep)}
    out["conversions"] = {label: {k: c[k] for k in keep} for label, c in doc["conversions"].items()}
    return out


# The engine's answers on small workloads (fast: what mutation testing of the engine runs):
# every backend, dtype and mode on three cards, a capped card, and the CPU.
ENGINE = [(impl, opts, dtype, mode, target, shape)
          for impl, opts in [("reference", {}), ("sdpa", {}), ("sdpa", {"backend": "math"}),
                             ("sdpa", {"backend": "efficient"}), ("sdpa", {"backend": "flash"}),
                             ("sdpa", {"backend": "cudnn"}), ("chunked", {"chunk": 512, "checkpoint": True}),
                             ("chunked", {"chunk": 512}), ("pooled", {"pool": 2})]
          for dtype in ("float32", "float16")
          for mode in ("forward", "train")
          for target, shape in [("t4", (2, 128, 32, 32)), ("h100", (3, 256, 24, 40)),
                                ("a100-80gb", (1, 64, 48, 48)), ("cpu", (2, 16, 8, 8))]]
CAPPED = [("reference", {}, "float16", "train", (1, 64, 64, 64)), ("sdpa", {}, "float16", "train", (1, 128, 64, 64)),
          ("sdpa", {}, "float32", "forward", (4, 128, 64, 64)),
          ("chunked", {"chunk": 1024, "checkpoint": True}, "float16", "train", (2, 128, 64, 64))]
CAP = 12 * 2**30


def engine_answers() -> dict:
    """Simulated records of ENGINE, and the largest batch of CAPPED on a 12 GiB card."""
    from sa_profiler.engine import Workload, simulate
    from sa_profiler.targets.gpus import custom
    from sa_profiler.advice.recommend import profile_row
    from sa_profiler.question import make_question

    out = {}
    for impl, opts, dtype, mode, target, (b, c, h, w) in ENGINE:
        rec = simulate(Workload(impl, b, c, h, w, dtype, mode, target, opts), make_question(target, torch_version=TORCH))
        key = f"{rec.workload.label} {b}x{c}x{h}x{w} {dtype} {mode} {target}"
        out[key] = {"status": rec.status, "peak_bytes": rec.peak_bytes, "baseline_bytes": rec.baseline_bytes,
                    "backend": rec.backend, "time_s": rec.time_s,
                    "top": [[t.bytes, "x".join(map(str, t.shape)), t.dtype, t.op, t.note] for t in rec.top_tensors[:4]]}
    target = make_question(custom(CAP), torch_version=TORCH)
    for impl, opts, dtype, mode, (b, c, h, w) in CAPPED:
        row = profile_row(target, impl, opts, dtype, mode, c, h, w, None)
        out[f"max batch {impl}{opts} {c}x{h}x{w} {dtype} {mode} 12GiB"] = row.max_batch
    return out


# Synthetic inputs beside the probes' (op, [(shape, dtype, stride)]): flash split-KV (few query
# blocks, each head size's key block), strided gradients, dropout, cuDNN's backward.
def _contig(shape):
    stride, acc = [], 1
    for d in reversed(shape):
        stride.insert(0, acc)
        acc *= d
    return tuple(stride)


def _bshd(shape):  # B x H x S x D laid out as B x S x H x D
    b, h, s, d = shape
    return (s * h * d, d, h * d, 1)


SYNTHETIC = [
    *[("_scaled_dot_product_flash_attention", [((1, h, s, d), dt, _contig((1, h, s, d)))] * 3)
      for h, s, d in [(8, 1024, 64), (2, 512, 128), (1, 4096, 32), (4, 256, 256), (1, 8192, 96)]
      for dt in ("float16", "bfloat16")],
    *[("_scaled_dot_product_flash_attention_backward",
       [((2, 4, 512, d), "float16", stride(( 2, 4, 512, d))) for stride in (_bshd, _contig, _contig, _contig, _bshd)])
      for d in (64, 160)],
    *[("_scaled_dot_product_efficient_attention",
       [((2, 1, 1024, 16), dt, _contig((2, 1, 1024, 16))), ((2, 1, 1024, 16), dt, _contig((2, 1, 1024, 16))),
        ((2, 1, 1024, dv), dt, _contig((2, 1, 1024, dv)))]) for dt in ("float16", "float32") for dv in (128, 256)],
    *[("_scaled_dot_product_efficient_attention_backward",
       [((2, 1, 1024, dv), dt, stride((2, 1, 1024, dv))), ((2, 1, 1024, 16), dt, _contig((2, 1, 1024, 16))),
        ((2, 1, 1024, 16), dt, _contig((2, 1, 1024, 16))), ((2, 1, 1024, dv), dt, _contig((2, 1, 1024, dv)))])
      for dt in ("float16", "float32") for dv in (64, 160, 512) for stride in (_contig, _bshd)],
    *[("_scaled_dot_product_cudnn_attention_backward",
       [((1, 2, 2048, 64), "float16", stride((1, 2, 2048, 64)))] + [((1, 2, 2048, 64), "float16", _contig((1, 2, 2048, 64)))] * 3
       + [((1, 2, 2048, 64), "float16", _bshd((1, 2, 2048, 64)))])  # grad_out, q, k, v, out (BSHD, as CUDA makes it)
      for stride in (_contig, _bshd)],
    ("_safe_softmax", [((3, 5, 7), "float32", _contig((3, 5, 7)))]),
    ("_softmax_backward_data", [((2, 64, 64), "float16", (4096, 1, 64)), ((2, 64, 64), "float16", (4096, 1, 64))]),
]
RULE_GPUS = ("t4", "a100-80gb", "h100")


def rule_answers() -> dict:
    """Every rule's temporaries (bytes, shape, dtype, note) for the inputs the committed probes
    measured (on their H100) and for SYNTHETIC inputs on three cards."""
    import ast
    from types import SimpleNamespace

    import pandas as pd
    import torch

    from sa_profiler.targets import gpus
    from sa_profiler.engine.rules import RULES, CudaRules

    def tensor(shape, dtype, stride):
        return torch.empty_strided(shape, stride, dtype=getattr(torch, dtype), device="meta")

    cases = []  # (gpu key, op, inputs)
    for path in sorted((ROOT / "reports" / "validation").glob("*probe*.csv")):
        data = pd.read_csv(path)
        for op, inputs in sorted(set(zip(data.op, data.inputs))):
            if op not in RULES or op in ("sum", "mean"):  # reductions: pinned by tests/test_reduce.py (dims not logged)
                continue
            specs = []
            for spec in inputs.split(";"):
                shape, dtype, stride, _, device = spec.rsplit(":", 4)
                specs.append((ast.literal_eval(shape), dtype, ast.literal_eval(stride)) if device == "cuda" else None)
            cases.append(("h100", op, specs))
    cases += [(g, op, specs) for g in RULE_GPUS for op, specs in SYNTHETIC]
    out = {}
    for key, op, specs in cases:
        args = [tensor(*s) if s is not None else torch.empty((), dtype=torch.int64) for s in specs]
        func = SimpleNamespace(overloadpacket=SimpleNamespace(__name__=op))
        temps = CudaRules(gpus.lookup(key)).transients(func, args, {}, [])
        name = f"{key} {op} " + ";".join("x".join(map(str, s[0])) + f":{s[1]}:{s[2]}" if s else "scalar" for s in specs)
        out[name] = [[int(b), list(shape), dtype, note] for b, shape, dtype, note in temps]
    return out


def answers_for(name: str) -> dict:
    """Today's answer to one command of COMMANDS, run in the repository root."""
    from click.testing import CliRunner

    from sa_profiler.cli import cli

    args = COMMANDS[name]
    here = os.getcwd()
    os.chdir(ROOT)
    try:
        result = CliRunner().invoke(cli, [*args, "--torch-version", TORCH])  # the rules of one torch, whichever runs
    finally:
        os.chdir(here)
    if result.exit_code != 0:
        raise RuntimeError(f"{name}: sa-profile {' '.join(args)} exited {result.exit_code}: {result.output}")
    doc = json.loads(result.stdout)
    return {"command": "sa-profile " + " ".join(args), "answers": _fit(doc) if args[0] == "fit" else _advice(doc)}


def answers() -> dict:
    """Today's answer to every command."""
    return {name: answers_for(name) for name in COMMANDS}


def main() -> None:
    sys.path.insert(0, str(ROOT))
    data = {"commands": answers(), "engine": engine_answers(), "rules": rule_answers()}
    tmp = GOLDEN.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(GOLDEN)
    print(f"wrote {GOLDEN.relative_to(ROOT)} ({len(data['commands'])} commands, {len(data['engine'])} engine answers, {len(data['rules'])} rule answers); commit it with why the numbers moved")


if __name__ == "__main__":
    main()
