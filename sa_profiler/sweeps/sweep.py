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

from sa_profiler.sweeps import files
from sa_profiler.engine import Record, Workload
from sa_profiler.sweeps.executors import LocalExecutor
from sa_profiler.sweeps.lock import FolderBusy, folder_lock
from sa_profiler.advice.recommend import total_bytes
from sa_profiler.attention.registry import defaults
from sa_profiler.question import Question
from sa_profiler.sweeps.rows import LOST, lost, run_workload  # noqa: F401 - LOST and run_workload are part of this module's API

RESULTS = "results.csv"
META = "meta.json"


class SweepError(ValueError):
    """A sweep that cannot start (its message is one line for the user)."""


@dataclass
class Sweep:
    """The grid under `question`: one Question or a list (a measured atlas over several GPU
    kinds: the grid once per card, cards outermost). `engine` and `torch_version`, where given,
    replace every question's own (a convenience: each row is answered under its question)."""

    question: Question | list[Question]
    impls: list[tuple[str, dict]]
    dtypes: list[str]
    modes: list[str]
    channels: list[int]
    resolutions: list[tuple[int, int]]
    batches: list[int]
    engine: str | None = None
    command: str = ""
    extra: dict = field(default_factory=dict)
    torch_version: str | None = None

    def __post_init__(self):
        from dataclasses import replace

        from sa_profiler.torch_compat import checked_torch_version

        given = list(self.question) if isinstance(self.question, (list, tuple)) else [self.question]
        if not given:
            raise SweepError("a sweep needs at least one card")
        try:
            engine = self.engine or given[0].engine
            version = checked_torch_version(self.torch_version, engine)
            self.questions: list[Question] = [replace(q, engine=engine, torch_version=version or q.torch_version)
                                              for q in given]
        except ValueError as err:
            raise SweepError(str(err)) from None
        self.question = self.questions[0]
        self.engine, self.torch_version = engine, self.question.torch_version
        self._by_key = {q.key: q for q in self.questions}

    def question_of(self, w: Workload) -> Question:
        return self._by_key[w.target]

    def workloads(self) -> Iterator[Workload]:
        """Configurations in order, batches ascending within each (for OOM skipping)."""
        for question in self.questions:
            yield from self._workloads(question)

    def _workloads(self, question: Question) -> Iterator[Workload]:
        for impl, opts in self.impls:
            for dtype in self.dtypes:
                for mode in self.modes:
                    for c in self.channels:
                        for h, w in self.resolutions:
                            o = {**defaults(impl, h * w, mode), **opts} if "chunk" not in opts else dict(opts)
                            for b in sorted(self.batches):
                                yield Workload(impl, b, c, h, w, dtype, mode, question.key, o)

    def __len__(self) -> int:
        return len(self.questions) * len(self.impls) * len(self.dtypes) * len(self.modes) * len(self.channels) * len(self.resolutions) * len(self.batches)


def config_key(w: Workload) -> str:
    return w.with_batch(1).key


def columns() -> list[str]:
    return list(Record(Workload("reference", 1, 8, 1, 1)).to_row()) + ["total_bytes", "usable_bytes"]


def read_rows(path: Path, notes: list[str] | None = None) -> list[dict]:
    """The rows of a results.csv, one per workload key: where a key appears more than once (a
    folder written by two sweeps at once, before the folder lock) the last row wins, and a
    line saying so goes to `notes`."""
    unique, dropped = dedupe(_raw_rows(path))
    if dropped and notes is not None:
        notes.append(duplicates_note(path, dropped, len(unique)))
    return unique


def _raw_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return [r for r in csv.DictReader(fh) if r.get("key")]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        why = getattr(err, "strerror", None) or str(err)
        raise SweepError(f"cannot read {str(path)!r}: {why}; expected the results.csv a sweep writes "
                         "(or choose another --out)") from None


def dedupe(rows: list[dict]) -> tuple[list[dict], int]:
    """One row per key, the last one of each, in the order of the last ones; and how many
    rows were dropped."""
    last = {r["key"]: i for i, r in enumerate(rows)}
    return [r for i, r in enumerate(rows) if last[r["key"]] == i], len(rows) - len(last)


def duplicates_note(path, dropped: int, kept: int) -> str:
    return (f"{path} had {dropped} duplicate row{'s' if dropped != 1 else ''} (a workload written more than "
            f"once); the last row of each workload is used ({kept} workloads)")


def environment() -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
           "cuda": torch.version.cuda or "none", "host": platform.node()}
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name()
    return env


def _rewrite(path: Path, rows: list[dict], keep: list[dict]) -> list[dict]:
    """Rewrite results.csv with `keep` only (temporary file, then rename) where it differs."""
    if len(keep) == len(rows):
        return rows
    files.write_csv(path, keep, columns())
    return keep


def run(sweep: Sweep, out: str | Path, resume: bool = False,
        on_row: Callable[[Workload, Record | None, bool], None] | None = None, executor=None,
        on_note: Callable[[str], None] | None = None) -> list[dict]:
    """Run the grid into `out`; returns every row of results.csv (earlier ones included).

    One writer per folder: the folder is locked (`lock.folder_lock`) for the whole run, and a
    second sweep into it raises SweepError naming the process that holds it.
    `executor` runs the workloads (default: one at a time in this process; see `executors`).
    Within a configuration, batches go in ascending order, one at a time, so an OOM at batch b
    marks the larger batches `skipped` whatever the executor; configurations run side by side
    as far as the executor has room. `on_note` gets one-line notes (duplicate rows found)."""
    out = Path(out)
    try:
        with folder_lock(out):
            return _run(sweep, out, resume, on_row, executor or LocalExecutor(), on_note)
    except FolderBusy as err:
        if executor is not None:
            executor.close()
        raise SweepError(str(err)) from None


def _run(sweep: Sweep, out: Path, resume: bool, on_row, executor, on_note) -> list[dict]:
    path = out / RESULTS
    raw = _raw_rows(path)
    existing, dropped = dedupe(raw)
    if existing and not resume:
        raise SweepError(f"{path} already has {len(existing)} rows: add --resume to finish it, or choose another --out")
    if dropped and on_note:
        on_note(duplicates_note(path, dropped, len(existing)))
    existing = _rewrite(path, raw, [r for r in existing if not lost(r)])  # retry lost rows; one row per key
    meta = _meta(sweep, executor)
    files.write_text(out / META, json.dumps(meta, indent=2))
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
            row["usable_bytes"] = sweep.question_of(w).usable
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
                            executor.submit(w, cfg, sweep.question_of(w))
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
    files.write_text(out / "results.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    return rows


def _meta(sweep: Sweep, executor) -> dict:
    """meta.json: the command, the questions whole (what a rebuilt report answers under), the
    executor and the environment."""
    meta = {"command": sweep.command, "target": _target_meta(sweep.question),
            "engine": sweep.engine, "torch_version": sweep.torch_version, "executor": executor.describe(),
            "environment": environment(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), **sweep.extra,
            "questions": [q.to_json() for q in sweep.questions]}
    if len(sweep.questions) > 1:
        meta["targets"] = [_target_meta(q) for q in sweep.questions]
    return meta


def _target_meta(q: Question) -> dict:
    return {"name": q.card.name, "key": q.key, "total_memory": q.card.total_memory, "usable_bytes": q.usable,
            "context_bytes": q.card.context_bytes, "headroom_bytes": q.headroom}
