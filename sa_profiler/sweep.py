"""A declarative grid of workloads, run by an executor (here, or on Ray), each row written and
flushed as it comes.

`results.csv` in the output folder gets one Record per row, appended and fsync'ed as each
workload finishes, so a crash, Ctrl-C or SIGKILL loses at most the running row; `resume`
skips the rows already there (by workload key) except those whose worker died. An out-of-memory or unsupported workload is a
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
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from .engine import Record, Workload, measure, simulate
from .recommend import Target, chunk_for, total_bytes

RESULTS = "results.csv"
META = "meta.json"
LOST = "worker lost"  # message prefix of rows whose worker died


class SweepError(ValueError):
    """A sweep that cannot start (its message is one line for the user)."""


@dataclass
class Sweep:
    """The grid. `target` is one Target or a list (a measured atlas over several GPU kinds:
    the grid once per target, targets outermost)."""

    target: Target | list[Target]
    impls: list[tuple[str, dict]]
    dtypes: list[str]
    modes: list[str]
    channels: list[int]
    resolutions: list[tuple[int, int]]
    batches: list[int]
    engine: str = "simulate"
    command: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.targets: list[Target] = list(self.target) if isinstance(self.target, (list, tuple)) else [self.target]
        if not self.targets:
            raise SweepError("a sweep needs at least one target")
        self.target = self.targets[0]
        self._by_key = {t.key: t for t in self.targets}

    def target_of(self, w: Workload) -> Target:
        return self._by_key[w.target]

    def workloads(self) -> Iterator[Workload]:
        """Configurations in order, batches ascending within each (for OOM skipping)."""
        for target in self.targets:
            yield from self._workloads(target)

    def _workloads(self, target: Target) -> Iterator[Workload]:
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
                                yield Workload(impl, b, c, h, w, dtype, mode, target.key, o)

    def __len__(self) -> int:
        return len(self.targets) * len(self.impls) * len(self.dtypes) * len(self.modes) * len(self.channels) * len(self.resolutions) * len(self.batches)


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


def run_workload(w: Workload, engine: str, cap: int | None) -> Record:
    """One row of a sweep (what a local loop and a Ray task both call)."""
    if engine == "measure":
        return measure(w, repeats=3)
    rec = simulate(w, cap=cap)
    if rec.status == "oom":  # what it would need, for the plots
        full = simulate(w)
        rec.peak_bytes, rec.baseline_bytes, rec.top_tensors, rec.time_s, rec.time_method = (
            full.peak_bytes, full.baseline_bytes, full.top_tensors, full.time_s, full.time_method)
    return rec


def run_one(w: Workload, sweep: Sweep) -> Record:
    return run_workload(w, sweep.engine, sweep.target_of(w).usable)


def lost(row: dict) -> bool:
    """A row whose worker died (node lost, process killed): `--resume` runs it again."""
    return row.get("status") == "error" and str(row.get("message", "")).startswith(LOST)


def _drop_lost(path: Path, rows: list[dict]) -> list[dict]:
    """Rewrite results.csv without the rows to retry (temporary file, then rename)."""
    keep = [r for r in rows if not lost(r)]
    if len(keep) == len(rows):
        return rows
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns(), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(keep)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return keep


def run(sweep: Sweep, out: str | Path, resume: bool = False,
        on_row: Callable[[Workload, Record | None, bool], None] | None = None, executor=None) -> list[dict]:
    """Run the grid into `out`; returns every row of results.csv (earlier ones included).

    `executor` runs the workloads (default: one at a time in this process; see `executors`).
    Within a configuration, batches go in ascending order, one at a time, so an OOM at batch b
    marks the larger batches `skipped` whatever the executor; configurations run side by side
    as far as the executor has room."""
    from .executors import LocalExecutor

    executor = executor or LocalExecutor()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS
    existing = read_rows(path)
    if existing and not resume:
        raise SweepError(f"{path} already has {len(existing)} rows: add --resume to finish it, or choose another --out")
    existing = _drop_lost(path, existing)
    meta = {"command": sweep.command, "target": _target_meta(sweep.target),
            "engine": sweep.engine, "executor": executor.describe(), "environment": environment(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), **sweep.extra}
    if len(sweep.targets) > 1:
        meta["targets"] = [_target_meta(t) for t in sweep.targets]
    _atomic_write(out / META, json.dumps(meta, indent=2))
    done = {r["key"]: r for r in existing}
    oom_at: dict[str, int] = {}
    for r in existing:
        if r["status"] == "oom":
            k = config_key(Record.from_row(r).workload)
            oom_at[k] = min(oom_at.get(k, 1 << 60), int(r["batch"]))
    queues: dict[str, deque[Workload]] = {}
    for w in sweep.workloads():
        queues.setdefault(config_key(w), deque()).append(w)
    header = columns()
    new_file = not path.exists() or path.stat().st_size == 0
    source = "measured" if sweep.engine == "measure" else "simulated"
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, header, extrasaction="ignore")
        if new_file:
            writer.writeheader()
            fh.flush()

        def write(w: Workload, rec: Record) -> None:
            row = rec.to_row()
            row["total_bytes"] = total_bytes(rec) if rec.peak_bytes is not None else ""
            row["usable_bytes"] = sweep.target_of(w).usable
            writer.writerow(row)
            fh.flush()
            os.fsync(fh.fileno())
            done[w.key] = row
            if on_row:
                on_row(w, rec, False)

        busy: set[str] = set()  # configurations with a workload running
        try:
            while queues or busy:
                for cfg in list(queues):  # start what may start, in grid order
                    if len(busy) >= executor.slots:
                        break
                    if cfg in busy:
                        continue
                    queue = queues[cfg]
                    while queue:
                        w = queue.popleft()
                        if w.key in done:
                            if on_row:
                                on_row(w, None, True)
                        elif cfg in oom_at and w.batch > oom_at[cfg]:
                            write(w, Record(w, status="skipped", message=f"skipped (oom at batch {oom_at[cfg]})",
                                            source=source))
                        else:
                            executor.submit(w, cfg, sweep.engine, sweep.target_of(w).usable)
                            busy.add(cfg)
                            break
                    if not queue:
                        del queues[cfg]
                if not busy:
                    continue
                for cfg, w, rec in executor.wait():
                    busy.discard(cfg)
                    if rec.status == "oom":
                        oom_at[cfg] = min(oom_at.get(cfg, 1 << 60), w.batch)
                    write(w, rec)
        finally:
            executor.close()
    order = {w.key: i for i, w in enumerate(sweep.workloads())}
    rows = sorted(read_rows(path), key=lambda r: order.get(r["key"], len(order)))  # grid order, whatever finished first
    _atomic_write(out / "results.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    return rows


def _target_meta(t: Target) -> dict:
    return {"name": t.gpu.name, "key": t.key, "total_memory": t.gpu.total_memory, "usable_bytes": t.usable}
