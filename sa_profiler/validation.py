"""Re-simulate committed measurements (reports/validation/*.csv) with today's simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from . import gpus
from .engine import Workload, simulate

MiB = 2**20


FOLDER = Path(__file__).resolve().parent.parent / "reports" / "validation"


def validation_csvs(folder: str | Path = FOLDER) -> list[Path]:
    """The simulated-vs-measured tables in `folder` (written by benchmarks/validate_cuda.py)."""
    out = []
    for path in sorted(Path(folder).glob("*.csv")):
        with open(path) as fh:
            if "sim_peak_bytes" in fh.readline():
                out.append(path)
    return out


def tolerance(measured: int) -> float:
    """The published goal for attention workloads: within max(2 %, 4 MiB)."""
    return max(0.02 * measured, 4 * MiB)


def resimulate(path: str | Path) -> pd.DataFrame:
    """One row per measured-ok workload: measured, simulated now, error and whether within tolerance."""
    data = pd.read_csv(path)
    out = []
    for row in data.itertuples(index=False):
        if row.status != "ok":
            continue
        target = gpus.lookup(row.device_name.split(" capped to ")[0]).key if row.target == "cuda" else row.target
        opts = json.loads(row.options) if isinstance(row.options, str) else {}
        w = Workload(row.impl, int(row.batch), int(row.channels), int(row.height), int(row.width), row.dtype,
                     row.mode, target, opts)
        sim = simulate(w, torch_version=str(row.torch_version))
        measured = int(row.peak_bytes)
        err = (sim.peak_bytes - measured) if sim.peak_bytes is not None else None
        out.append({
            "key": row.key, "impl": w.label, "dtype": w.dtype, "mode": w.mode, "tokens": w.tokens,
            "measured": measured, "simulated": sim.peak_bytes, "error": err,
            "rel_error": err / measured if err is not None and measured else None,
            "within": err is not None and abs(err) <= tolerance(measured),
            "backend": row.backend if isinstance(row.backend, str) else "", "sim_backend": sim.backend,
            "device": row.device_name, "torch": row.torch_version,
        })
    return pd.DataFrame(out)


def summary(paths) -> pd.DataFrame:
    """Worst and median absolute relative error per implementation/backend, mode and card."""
    frames = [resimulate(p) for p in paths]
    data = pd.concat(frames, ignore_index=True)
    data["abs_rel"] = data.rel_error.abs()
    data["exact"] = data.error == 0
    return (data.groupby(["device", "impl", "mode"])
            .agg(workloads=("key", "count"), to_the_byte=("exact", "mean"), median=("abs_rel", "median"),
                 worst=("abs_rel", "max"), within=("within", "mean"))
            .reset_index())


def main(argv=None) -> None:
    """`python -m sa_profiler.validation [CSV ...]`: the accuracy table of the README."""
    import sys

    paths = (argv if argv is not None else sys.argv[1:]) or validation_csvs()
    table = summary(paths)
    print("| card | implementation | mode | workloads | to the byte | median error | worst error | within max(2 %, 4 MiB) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in table.itertuples(index=False):
        print(f"| {r.device} | {r.impl} | {r.mode} | {r.workloads} | {r.to_the_byte:.0%} | {r.median:.2%} | "
              f"{r.worst:.2%} | {r.within:.0%} |")


if __name__ == "__main__":
    main()
