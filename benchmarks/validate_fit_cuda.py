"""Whole-model training steps on the local CUDA card vs `sa_profiler.models.fit`'s simulation.

    python benchmarks/validate_fit_cuda.py --out reports/validation            # the examples
    python benchmarks/validate_fit_cuda.py --zoo --probe --out reports/validation  # and the zoo

For each model: two training steps (Adam, as `fit` runs them) on the card, the peak of
`max_memory_allocated` from before the first step (parameters, buffers, input and library
workspaces included), next to the simulated peak for this card. Each case runs in a process of
its own, as a user's training run does: no library workspace is left from another model. Writes
fit-<gpu>-<torch>.csv (the examples) and fit-zoo-<gpu>-<torch>.csv (`--zoo`: ViT, diffusers
UNet, nn.MultiheadAttention, BERT, the original SAGAN code and ResNet-50, each in float32, fp16
AMP and bf16 AMP), with the SDPA backend of every attention call as torch's dispatcher chose it
on the card (`torch._fused_sdp_choice`) beside the simulated choice. `--probe` also writes
probe-fit-<gpu>.csv: for every op of the two steps that allocated bytes no output holds (a
library workspace), the op, its inputs and those bytes. Goal: within 5 %.
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import sys
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sa_profiler.sweeps import files

from sa_profiler.targets import gpus  # noqa: E402
from sa_profiler.models import inputs as model_inputs  # noqa: E402
from sa_profiler.attention.routing import _OPENED, _unchecked  # noqa: E402
from sa_profiler.models.fit import _first_tensor, load, parse_inputs, run_step  # noqa: E402

CASES = [  # model, its arguments, its inputs, batch, AMP
    ("examples/sagan.py:Generator", {"ch": 32, "image_size": 64}, "128", 16, None),
    ("examples/sagan.py:Generator", {"ch": 32, "image_size": 64}, "128", 16, "fp16"),
    ("examples/sagan.py:Discriminator", {"ch": 32, "image_size": 64}, "3x64x64", 16, None),
    ("examples/classifier.py:resnet_attn", {"width": 64, "num_classes": 100}, "3x128x128", 8, None),
    ("examples/classifier.py:forum_cnn", {"channels": 64}, "64x64x64", 2, None),
]
SAGAN_REPO = "examples/zoo/sagan_repo/sagan_models.py"
ZOO = [
    ("examples/zoo/vit.py:vit_small", {}, "3x224x224", 32),
    ("examples/zoo/unet.py:unet", {"block_out_channels": (64, 128, 128)}, "3x64x64;timestep=B:int64", 16),
    ("examples/zoo/mha.py:cnn_mha", {"width": 64, "heads": 4}, "3x128x128", 16),
    ("examples/zoo/bert.py:bert_mini", {}, "input_ids=128:int64;attention_mask=128:int64", 32),
    (f"{SAGAN_REPO}:Generator", {"batch_size": 16, "image_size": 64, "conv_dim": 32, "z_dim": 128}, "128", 16),
    (f"{SAGAN_REPO}:Discriminator", {"batch_size": 16, "image_size": 64, "conv_dim": 32}, "3x64x64", 16),
    ("examples/zoo/resnet.py:resnet50", {}, "3x224x224", 16),
]
AMP = {"fp16": torch.float16, "bf16": torch.bfloat16}
BACKEND = {0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable", -1: "error"}


class DispatcherChoice(TorchFunctionMode):
    """Counts, for each SDPA call of a real CUDA step, the backend torch's dispatcher picks for it
    (`_fused_sdp_choice`, the function `scaled_dot_product_attention` itself asks; private, so
    guarded: 'unknown' when this torch lacks it)."""

    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            self.counts[self._choice(*args, **kwargs)] += 1
        elif func in _OPENED:  # nn.MultiheadAttention's functional: run its body under this mode
            with self:
                return _unchecked(func)(*args, **kwargs)
        return func(*args, **kwargs)

    @staticmethod
    def _choice(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        choose = getattr(torch, "_fused_sdp_choice", None)
        if choose is None:
            return "unknown"
        if torch.is_autocast_enabled("cuda"):  # SDPA runs on the autocast dtype
            dt = torch.get_autocast_dtype("cuda")
            q, k, v = (t.to(dt) if t.is_floating_point() else t for t in (q, k, v))
        try:
            return BACKEND.get(int(choose(q, k, v, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa)), "?")
        except Exception:  # older signature
            return BACKEND.get(int(choose(q, k, v, attn_mask, dropout_p, is_causal, scale=scale)), "?")


def _counts(c) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(dict(c).items()))


def measured_step(factory, specs, batch, amp, probe=None, device="cuda"):
    """Two real training steps as `fit` models them; (peak, dispatcher's SDPA choices)."""
    torch.manual_seed(0)
    model = factory().to(device).train()
    args, kwargs = model_inputs.make(specs, batch, device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scaler = torch.amp.GradScaler("cuda") if amp else None
    choice = DispatcherChoice()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    for i in range(2):
        opt.zero_grad(set_to_none=True)
        with choice:
            if probe is not None:
                probe.step = i
                probe.__enter__()
            try:
                if amp:
                    with torch.autocast("cuda", dtype=AMP[amp]):
                        out = model(*args, **kwargs)
                    loss = _first_tensor(out).float().mean()
                    del out
                    scaler.scale(loss).backward()
                    del loss
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss = _first_tensor(model(*args, **kwargs)).float().mean()
                    loss.backward()
                    del loss
                    opt.step()
            finally:
                if probe is not None:
                    probe.__exit__(None, None, None)
        if i == 0:
            calls = Counter(choice.counts)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del model, args, kwargs, opt
    gc.collect()
    torch.cuda.empty_cache()
    return peak, calls


def versions() -> dict:
    import subprocess

    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        driver = ""
    return {"driver": driver, "cuda": torch.version.cuda or "", "cudnn": torch.backends.cudnn.version() or ""}


def child(which: str, index: int, probe: bool, full: bool = False) -> None:
    """One case, in a process of its own (library workspaces start unallocated, as in a user's
    run): prints one JSON line: the peak and the dispatcher's SDPA choices, or with `probe` the
    ops that allocated bytes no output holds (the first use of a workspace shows as kept bytes)."""
    import json

    spec, kwargs, inputs, batch, amp = cases(which)[index]
    factory, specs = load(spec, kwargs), parse_inputs(inputs.split(";"))
    if not probe:
        peak, calls = measured_step(factory, specs, batch, amp)
        print(json.dumps({"peak": peak, "calls": dict(calls)}))
        return
    from probe_cuda_ops import Probe

    p = Probe()
    measured_step(factory, specs, batch, amp, p)
    rows = [{"index": i, **r} for i, r in enumerate(p.rows)
            if full or r["hidden_transient"] + max(r["hidden_kept"], 0) > 0]
    # every allocation happens inside an op, so the step's peak is the highest op peak
    peak = max((r["allocated"] + r["hidden_transient"] for r in p.rows), default=0)
    print(json.dumps({"peak": peak, "rows": rows}))


def cases(which: str) -> list:
    return CASES if which == "examples" else [(*z, amp) for z in ZOO for amp in (None, "fp16", "bf16")]


def in_child(which: str, index: int, probe: bool = False, full: bool = False) -> dict:
    import json
    import subprocess

    cmd = [sys.executable, __file__, "--child", which, str(index)] + (["--probe"] if probe else []) + (
        ["--timeline", "-"] if full else [])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError((done.stderr.strip().splitlines() or ["no output"])[-1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    from concurrent.futures import ThreadPoolExecutor

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/validation")
    ap.add_argument("--zoo", action="store_true", help="also the zoo (fit-zoo-<gpu>-<torch>.csv)")
    ap.add_argument("--probe", action="store_true", help="also the library workspaces op by op (probe-fit-<gpu>.csv)")
    ap.add_argument("--jobs", type=int, default=6, help="cases measured at once, each in its own process")
    ap.add_argument("--timeline", metavar="SET:INDEX,...",
                    help="only write every op of these cases (allocated bytes after each, hidden bytes) to "
                         "timeline-SET-INDEX.csv, e.g. zoo:13,examples:3")
    ap.add_argument("--child", nargs=2, metavar=("SET", "INDEX"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child[0], int(args.child[1]), args.probe, full=args.timeline == "-")
    if args.timeline:
        os.makedirs(args.out, exist_ok=True)
        for item in args.timeline.split(","):
            which, index = item.split(":")
            rows = in_child(which, int(index), probe=True, full=True)["rows"]
            path = files.write_csv(os.path.join(args.out, f"timeline-{which}-{index}.csv"), rows, list(rows[0]))
            print("wrote", path, len(rows), "ops", flush=True)
        return None
    gpu = gpus.local()
    tv = torch.__version__.split("+")[0]
    os.makedirs(args.out, exist_ok=True)
    env = versions()
    sets = [("examples", f"fit-{gpu.key}-{tv}.csv")] + ([("zoo", f"fit-zoo-{gpu.key}-{tv}.csv")] if args.zoo else [])
    probe_rows = []
    pool = ThreadPoolExecutor(max(1, args.jobs))
    for which, name in sets:
        todo = cases(which)
        measured = [pool.submit(in_child, which, i) for i in range(len(todo))]
        probed = [pool.submit(in_child, which, i, True) for i in range(len(todo))] if args.probe else None
        path = os.path.join(args.out, name)
        with open(path + ".tmp", "w", newline="") as fh:
            writer = None
            for i, (spec, kwargs, inputs, batch, amp) in enumerate(todo):
                try:
                    sim = run_step(load(spec, kwargs), inputs.split(";"), batch, gpu, amp=amp)
                    got = measured[i].result()
                except Exception as err:
                    print(f"{spec} amp={amp}: failed: {type(err).__name__}: {str(err).splitlines()[0][:160]}", flush=True)
                    continue
                meas, calls = got["peak"], Counter(got["calls"])
                err = (sim.peak_total - meas) / meas
                row = {"model": spec, "args": kwargs, "input": inputs, "batch": batch, "amp": amp or "",
                       "optimizer": "adam", "measured_peak": meas, "simulated_peak": sim.peak_total, "rel_error": err,
                       "backends_measured": _counts(calls), "backends_simulated": _counts(sim.backends),
                       "gpu": gpu.name, "torch": torch.__version__, **env}
                if probed is not None:
                    try:
                        p = probed[i].result()
                        row["probed_peak"] = p["peak"]
                        probe_rows += [{"model": spec, "amp": amp or "", **r} for r in p["rows"]]
                    except Exception as e:
                        print(f"{spec} amp={amp}: probe failed: {e}", flush=True)
                        row["probed_peak"] = ""
                if writer is None:
                    writer = csv.DictWriter(fh, list(row))
                    writer.writeheader()
                writer.writerow(row)
                fh.flush()
                print(f"{spec:48s} amp={amp or '-':5s} measured {meas:>12} simulated {sim.peak_total:>12} ({err:+.2%}) "
                      f"sdpa {_counts(calls) or '-'} / sim {_counts(sim.backends) or '-'}", flush=True)
        os.replace(path + ".tmp", path)
        print("wrote", path)
    if probe_rows:
        path = files.write_csv(os.path.join(args.out, f"probe-fit-{gpu.key}.csv"), probe_rows, list(probe_rows[0]))
        print("wrote", path)


if __name__ == "__main__":
    main()
