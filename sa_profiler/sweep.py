"""A declarative grid of workloads, run one by one, each row written and flushed as it comes.

`results.csv` in the output folder gets one Record per row, appended and fsync'ed as each
workload finishes, so a crash, Ctrl-C or SIGKILL loses at most the running row; `resume`
skips the rows already there (by workload key). An out-of-memory or unsupported workload is a
row with its status; after an OOM at batch b, larger batches of the same configuration are
recorded as `skipped` without being run. `meta.json` (the command, the target, the
environment) is written first; `results.json` and `report.html` at the end, each through a
temporary file and a rename.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from .engine import Record, Workload, measure, simulate
from .recommend import Target, chunk_for, total_bytes

RESULTS = "results.csv"
META = "meta.json"


class SweepError(ValueError):
    """A sweep that cannot start (its message is one line for the user)."""


@dataclass
class Sweep:
    target: Target
    impls: list[tuple[str, dict]]
    dtypes: list[str]
    modes: list[str]
    channels: list[int]
    resolutions: list[tuple[int, int]]
    batches: list[int]
    engine: str = "simulate"
    command: str = ""
    extra: dict = field(default_factory=dict)

    def workloads(self) -> Iterator[Workload]:
        """Configurations in order, batches ascending within each (for OOM skipping)."""
        for impl, opts in self.impls:
            for dtype in self.dtypes:
                for mode in self.modes:
                    for c in self.channels:
                        for h, w in self.resolutions:
                            o = dict(opts)
                            if impl == "chunked" and "chunk" not in o:
                                o["chunk"] = chunk_for(h * w)
                                if mode == "train":
                                    o.setdefault("checkpoint", True)
                            for b in sorted(self.batches):
                                yield Workload(impl, b, c, h, w, dtype, mode, self.target.key, o)

    def __len__(self) -> int:
        return len(self.impls) * len(self.dtypes) * len(self.modes) * len(self.channels) * len(self.resolutions) * len(self.batches)


def config_key(w: Workload) -> str:
    return w.with_batch(1).key


def columns() -> list[str]:
    return list(Record(Workload("reference", 1, 8, 1, 1)).to_row()) + ["total_bytes", "usable_bytes"]


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r for r in rows if r.get("key")]


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def environment() -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
           "cuda": torch.version.cuda or "none", "host": platform.node()}
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name()
    return env


def run_one(w: Workload, sweep: Sweep) -> Record:
    if sweep.engine == "measure":
        return measure(w, repeats=3)
    rec = simulate(w, cap=sweep.target.usable)
    if rec.status == "oom":  # what it would need, for the plots
        full = simulate(w)
        rec.peak_bytes, rec.baseline_bytes, rec.top_tensors, rec.time_s, rec.time_method = (
            full.peak_bytes, full.baseline_bytes, full.top_tensors, full.time_s, full.time_method)
    return rec


def run(sweep: Sweep, out: str | Path, resume: bool = False,
        on_row: Callable[[Workload, Record | None, bool], None] | None = None) -> list[dict]:
    """Run the grid into `out`; returns every row of results.csv (earlier ones included)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS
    existing = read_rows(path)
    if existing and not resume:
        raise SweepError(f"{path} already has {len(existing)} rows: add --resume to finish it, or choose another --out")
    meta = {"command": sweep.command, "target": {"name": sweep.target.gpu.name, "key": sweep.target.key,
            "total_memory": sweep.target.gpu.total_memory, "usable_bytes": sweep.target.usable},
            "engine": sweep.engine, "environment": environment(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            **sweep.extra}
    _atomic_write(out / META, json.dumps(meta, indent=2))
    done = {r["key"]: r for r in existing}
    oom_at: dict[str, int] = {}
    for r in existing:
        if r["status"] == "oom":
            k = config_key(Record.from_row(r).workload)
            oom_at[k] = min(oom_at.get(k, 1 << 60), int(r["batch"]))
    header = columns()
    new_file = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, header, extrasaction="ignore")
        if new_file:
            writer.writeheader()
            fh.flush()
        for w in sweep.workloads():
            if w.key in done:
                if on_row:
                    on_row(w, None, True)
                continue
            cfg = config_key(w)
            if cfg in oom_at and w.batch > oom_at[cfg]:
                rec = Record(w, status="skipped", message=f"skipped (oom at batch {oom_at[cfg]})",
                             source="measured" if sweep.engine == "measure" else "simulated")
            else:
                rec = run_one(w, sweep)
                if rec.status == "oom":
                    oom_at[cfg] = min(oom_at.get(cfg, 1 << 60), w.batch)
            row = rec.to_row()
            row["total_bytes"] = total_bytes(rec) if rec.peak_bytes is not None else ""
            row["usable_bytes"] = sweep.target.usable
            writer.writerow(row)
            fh.flush()
            os.fsync(fh.fileno())
            done[w.key] = row
            if on_row:
                on_row(w, rec, False)
    rows = read_rows(path)
    _atomic_write(out / "results.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    return rows
