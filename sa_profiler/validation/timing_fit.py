"""Fit the time model's constants on measured steps, and check them on held-out ones.

    python -m sa_profiler.validation.timing_fit           # fit on the main H100 grid, rewrite engine/timing_constants.py
    python -m sa_profiler.validation.timing_fit --check   # the held-out figures of the constants in use (README)

The ground truth is the measured time of each `ok` row of the validation CSVs (CUDA events,
median of 3 after a warm-up, one step, written by benchmarks/validate_cuda.py). Each row is
re-simulated with today's simulator, which lists the step's ops (engine/timing.py); the
constants minimise the mean squared log of measured / estimated over the main grid (L-BFGS
in log space, efficiencies kept in (0, 1)). The held-out grid (other shapes) is never seen by
the fit.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import pandas as pd
import torch

from sa_profiler.targets import gpus
from sa_profiler.engine import Workload, simulate
from sa_profiler.question import Question
from sa_profiler.engine import timing
from sa_profiler.validation.accuracy import FOLDER

MAIN = FOLDER / "nvidia-h100-80gb-hbm3-2.11.0-cu130.csv"
HELDOUT = FOLDER / "nvidia-h100-80gb-hbm3-2.11.0-cu130-heldout.csv"
CONSTANTS = Path(timing.__file__).with_name("timing_constants.py")
PRIOR = 0.01  # weight of the prior in the fit (chosen on the main grid: same fit, plausible constants)
ORDER_MARGIN = 1.2  # pairs whose measured times differ by more than this factor are checked for order


@dataclass
class Step:
    """One measured row and the ops its simulation lists."""

    w: Workload
    measured_s: float
    ops: list[timing.Op]
    gpu: gpus.GPU

    @property
    def config(self) -> tuple:
        """The layer and input, whatever the implementation."""
        w = self.w
        return w.batch, w.channels, w.height, w.width, w.dtype, w.mode


def load(path: str | Path) -> list[Step]:
    """The measured `ok` rows of a validation CSV, each with its simulated ops."""
    out = []
    for row in pd.read_csv(path).itertuples(index=False):
        if row.status != "ok" or not row.time_s == row.time_s:
            continue
        gpu = gpus.lookup(row.device_name.split(" capped to ")[0])
        opts = json.loads(row.options) if isinstance(row.options, str) else {}
        w = Workload(row.impl, int(row.batch), int(row.channels), int(row.height), int(row.width), row.dtype,
                     row.mode, gpu.key, opts)
        timer = timing.StepTimer(gpu)
        rec = simulate(w, Question(gpu, str(row.torch_version)), timer=timer)
        if rec.status != "ok":
            continue
        out.append(Step(w, float(row.time_s), timer.ops, gpu))
    return out


def estimates(steps: list[Step], c: timing.Constants | None = None) -> list[float]:
    c = c or timing.Constants.fitted()
    return [timing.step_seconds(s.ops, s.w, s.gpu, c) for s in steps]


# -- the fit --------------------------------------------------------------------------------
def _kinds(steps: list[Step]) -> list[str]:
    return sorted({op.kind for s in steps for op in s.ops if op.kind != "view"})


def fit(steps: list[Step], iterations: int = 400, prior: float = PRIOR) -> timing.Constants:
    """Constants that minimise the mean squared log ratio of measured to estimated time."""
    kinds = _kinds(steps)
    compute = [k for k in kinds if k.startswith(("gemm", "efficient", "flash", "cudnn"))]
    bw_groups = ["softmax", "*"]
    groups = sorted({op.launch_group for s in steps for op in s.ops})
    launches = torch.zeros(len(steps), len(groups), dtype=torch.float64)
    rows, kind_ix, fwork, bwork = [], [], [], []
    for i, s in enumerate(steps):
        for op in s.ops:
            launches[i, groups.index(op.launch_group)] += 1
            if op.kind == "view":
                continue
            rows.append(i)
            kind_ix.append(kinds.index(op.kind))
            fwork.append(op.flops / timing.peak_flops(s.gpu, op.precision))
            bwork.append(op.bytes / s.gpu.bandwidth)
    rows_t, kind_t = torch.tensor(rows), torch.tensor(kind_ix)
    fwork_t, bwork_t = torch.tensor(fwork, dtype=torch.float64), torch.tensor(bwork, dtype=torch.float64)
    train = torch.tensor([s.w.mode == "train" for s in steps])
    host_kinds = sorted({k for s in steps for k in timing.host_calls(s.w)})
    host_n = torch.tensor([[timing.host_calls(s.w).get(k, 0) for k in host_kinds] for s in steps],
                          dtype=torch.float64).reshape(len(steps), len(host_kinds))
    measured = torch.tensor([s.measured_s for s in steps], dtype=torch.float64)
    has_flops = torch.tensor([k in compute for k in kinds])
    bw_of_kind = torch.tensor([bw_groups.index(k) if k in bw_groups else bw_groups.index("*") for k in kinds])

    # log host costs (per launch group; forward step, train step); logits of the efficiencies
    launch = torch.full((len(groups),), math.log(1e-5), dtype=torch.float64, requires_grad=True)
    over = torch.tensor([math.log(1e-4), math.log(3e-4)], dtype=torch.float64, requires_grad=True)
    eff = torch.full((len(kinds),), -2.0, dtype=torch.float64, requires_grad=True)
    bw = torch.full((len(bw_groups),), 0.0, dtype=torch.float64, requires_grad=True)
    host = torch.full((len(host_kinds),), math.log(1e-4), dtype=torch.float64, requires_grad=True)

    def predict():
        fwd, trn = over.exp()
        e = torch.sigmoid(eff)[kind_t]
        b = torch.sigmoid(bw)[bw_of_kind][kind_t]
        comp = torch.where(has_flops[kind_t], fwork_t / e, torch.zeros_like(fwork_t))
        gpu = torch.zeros(len(steps), dtype=torch.float64).index_add(0, rows_t, torch.maximum(comp, bwork_t / b))
        return gpu + launches @ launch.exp() + torch.where(train, trn, fwd) + host_n @ host.exp()

    opt = torch.optim.LBFGS([launch, over, eff, bw, host], max_iter=iterations, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = ((measured / predict()).log() ** 2).mean()
        # a weak prior: kinds of op and launch groups alike unless the data say otherwise
        loss = loss + prior * (((eff - eff.mean()) ** 2).mean() + ((launch - launch.mean()) ** 2).mean())
        loss.backward()
        return loss

    opt.step(closure)
    fwd, trn = (float(v) for v in over.detach().exp())
    eff_v = torch.sigmoid(eff.detach())
    bw_v = torch.sigmoid(bw.detach())
    return timing.Constants(
        {g: float(v) for g, v in zip(groups, launch.detach().exp())}, {"forward": fwd, "train": trn}, {k: float(v) for k, v in zip(host_kinds, host.detach().exp())},
        {k: float(eff_v[i]) for i, k in enumerate(kinds) if k in compute},
        {g: float(bw_v[i]) for i, g in enumerate(bw_groups)},
    )


# -- the check ------------------------------------------------------------------------------
def _quantile(values: list[float], q: float) -> float:
    return float(torch.tensor(values, dtype=torch.float64).quantile(q))


def check(steps: list[Step], c: timing.Constants | None = None) -> dict:
    """Figures of the estimate against measurement: measured / estimated (median, p10, p90),
    the error factor max(ratio, 1/ratio) (median = typical, p90), and how often the estimate
    orders two implementations of one configuration as measured, over the pairs whose measured
    times differ by more than 20 % (also 50 % and 2x). Pairs of identical steps (the same ops
    and host calls) are left out of the order count: their measured difference is noise, and
    `noise_pairs` says how many of them differ by more than 20 %."""
    est = estimates(steps, c)
    ratio = [s.measured_s / e for s, e in zip(steps, est)]
    factor = [max(r, 1 / r) for r in ratio]
    by_config: dict[tuple, list[int]] = {}
    for i, s in enumerate(steps):
        by_config.setdefault(s.config, []).append(i)
    counts = {m: [0, 0] for m in (ORDER_MARGIN, 1.5, 2.0)}
    identical = noisy = 0
    for members in by_config.values():
        for i, j in combinations(members, 2):
            mi, mj = steps[i].measured_s, steps[j].measured_s
            apart = max(mi, mj) / min(mi, mj)
            if steps[i].ops == steps[j].ops and timing.host_calls(steps[i].w) == timing.host_calls(steps[j].w):
                identical += 1
                noisy += apart > ORDER_MARGIN
                continue
            for margin, n in counts.items():
                if apart > margin:
                    n[0] += 1
                    n[1] += (mi < mj) == (est[i] < est[j]) and est[i] != est[j]
    pairs, agree = counts[ORDER_MARGIN]
    return {"rows": len(steps), "median_ratio": _quantile(ratio, 0.5), "p10_ratio": _quantile(ratio, 0.1),
            "p90_ratio": _quantile(ratio, 0.9), "typical_factor": _quantile(factor, 0.5),
            "p90_factor": _quantile(factor, 0.9), "order_pairs": pairs, "order_agree": agree,
            "order_agreement": agree / pairs if pairs else 1.0,
            "order_agreement_50pct": counts[1.5][1] / max(counts[1.5][0], 1), "order_pairs_50pct": counts[1.5][0],
            "order_agreement_2x": counts[2.0][1] / max(counts[2.0][0], 1), "order_pairs_2x": counts[2.0][0],
            "identical_pairs": identical, "noise_pairs": noisy}


# -- the constants module -------------------------------------------------------------------
def _module_text(c: timing.Constants, card: str, main: dict, heldout: dict) -> str:
    def fmt(d: dict) -> str:
        return "{\n" + "".join(f"    {k!r}: {v!r},\n" for k, v in d.items()) + "}"

    def rounded(d: dict) -> dict:
        return {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in d.items()}

    return f'''"""The time model's constants (engine/timing.py), fitted on measured steps. Generated: do not edit.

Command: python -m sa_profiler.validation.timing_fit
Fitted on: reports/validation/{MAIN.name} ({main["rows"]} measured rows: CUDA events,
  median of 3 after a warm-up, torch 2.11.0+cu130)
Checked on: reports/validation/{HELDOUT.name} ({heldout["rows"]} rows, shapes the fit never saw)
EFFICIENCY: fraction of the card's peak FLOP rate per kind of op; BANDWIDTH_EFFICIENCY: fraction
of its memory bandwidth (softmax, and "*" for every other op); LAUNCH_S: host and launch cost per
op, by direction and family (a view launches no kernel but is dispatched); STEP_S: per step, by mode; HOST_S: per host call
that no dispatched op shows (timing.host_calls).
"""

CARD = {card!r}
LAUNCH_S = {fmt({k: float(f"{v:.4g}") for k, v in c.launch_s.items()})}
STEP_S = {fmt({k: float(f"{v:.4g}") for k, v in c.step_s.items()})}
HOST_S = {fmt({k: float(f"{v:.4g}") for k, v in c.host_s.items()})}
EFFICIENCY = {fmt({k: float(f"{v:.4g}") for k, v in c.efficiency.items()})}
BANDWIDTH_EFFICIENCY = {fmt({k: float(f"{v:.4g}") for k, v in c.bandwidth_efficiency.items()})}
MAIN = {fmt(rounded(main))}
HELDOUT = {fmt(rounded(heldout))}
'''


def write_constants(text: str, path: Path = CONSTANTS) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".timing_constants.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def report(name: str, figures: dict) -> str:
    return (f"{name}: {figures['rows']} rows; measured/estimated median {figures['median_ratio']:.2f} "
            f"(p10 {figures['p10_ratio']:.2f}, p90 {figures['p90_ratio']:.2f}); error factor median "
            f"x{figures['typical_factor']:.2f}, p90 x{figures['p90_factor']:.2f}; order agrees in "
            f"{figures['order_agree']}/{figures['order_pairs']} pairs apart by > 20 % ({figures['order_agreement']:.0%}), "
            f"{figures['order_agreement_50pct']:.0%} of {figures['order_pairs_50pct']} apart by > 50 %, "
            f"{figures['order_agreement_2x']:.0%} of {figures['order_pairs_2x']} apart by > 2x; identical steps measured "
            f"> 20 % apart: {figures['noise_pairs']} of {figures['identical_pairs']} pairs")


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args not in ([], ["--check"]):
        print("usage: python -m sa_profiler.validation.timing_fit [--check]", file=sys.stderr)
        return 2
    main_steps, held_steps = load(MAIN), load(HELDOUT)
    if args == ["--check"]:
        print(report("main grid (fitted on)", check(main_steps)))
        print(report("held-out grid", check(held_steps)))
        return 0
    c = fit(main_steps)
    figures_main, figures_held = check(main_steps, c), check(held_steps, c)
    write_constants(_module_text(c, main_steps[0].gpu.name, figures_main, figures_held))
    print(report("main grid (fitted on)", figures_main))
    print(report("held-out grid", figures_held))
    print(f"wrote {CONSTANTS.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
