"""The largest batch of each configuration of a sweep, by the engine's own search.

A sweep's grid stops at its largest batch; what fits may be far beyond it (95 images where the
grid went to 16). For every configuration (implementation, options, dtype, mode, channels,
resolution, target) this runs `recommend.largest_batch` on the simulator under the target's
usable memory, starting from the grid's own simulated rows (they are not run again); the
sweep writes the answer to `largest.csv` beside results.csv. Measured sweeps are searched on
the simulator too (the column `source` says so).

Each configuration is searched under its row's question: the one the sweep was asked under
(its `meta.json` holds them whole), or, from `results.csv` alone, the card its `target` names,
the torch whose rules its `torch_version` gives, and its `usable_bytes`: a folder searched again
under another torch answers as the sweep did."""

from __future__ import annotations

from pathlib import Path

from sa_profiler.sweeps import files
from sa_profiler.engine import Record, Workload, simulate
from sa_profiler.engine.card_keys import resolve
from sa_profiler.advice.recommend import bytes_per_image, largest_batch, total_bytes
from sa_profiler.question import Question

LARGEST = "largest.csv"
COLUMNS = ["target", "device_name", "impl", "options", "dtype", "mode", "channels", "height", "width", "tokens",
           "status", "message", "backend", "per_image_bytes", "max_batch", "total_bytes", "time_s", "usable_bytes",
           "source", "torch_version"]


def search(rows: list[dict], questions: list[Question] | None = None) -> list[dict]:
    """One row per configuration found in a sweep's rows (in their order), each searched under
    its question: from `questions` by card key (the sweep's own), else read from the row.
    Simulated rows of the grid seed the search."""
    from sa_profiler.sweeps.sweep import config_key

    given = {q.key: q for q in questions or ()}
    configs: dict[str, tuple[Workload, Question | str, int]] = {}
    seen: dict[str, dict[int, Record]] = {}
    for r in rows:
        usable = _int(r.get("usable_bytes"))
        if usable is None:
            continue
        rec = Record.from_row(r)
        cfg = config_key(rec.workload)
        if cfg not in configs:
            configs[cfg] = (rec.workload.with_batch(1), given.get(rec.workload.target) or _question(r, usable), usable)
        if rec.status in ("ok", "oom") and rec.source == "simulated":
            seen.setdefault(cfg, {})[rec.workload.batch] = rec
    return [_searched(w, question, usable, seen.get(cfg, {})) for cfg, (w, question, usable) in configs.items()]


def _question(row: dict, usable: int) -> Question | str:
    """The question a row was answered under, from its columns; a one-line reason where the card
    cannot be had here (a cluster's card)."""
    try:
        card = resolve(str(row["target"]))
    except (ValueError, KeyError) as err:
        return str(err).strip().splitlines()[0]
    from sa_profiler.targets import gpus

    card = card or gpus.host()
    version = str(row.get("torch_version") or "") or _running_torch()
    return Question(card, version, card.total_memory - card.context_bytes - usable)


def _running_torch() -> str:
    import torch

    return torch.__version__


def _searched(w: Workload, question: Question | str, usable: int, seen: dict[int, Record]) -> dict:
    try:
        if isinstance(question, str):
            raise ValueError(question)
        return _one(w, question, seen)
    except (ValueError, KeyError) as err:  # a target this machine cannot simulate (a cluster's card), an unknown impl
        row = {c: "" for c in COLUMNS}
        row.update({"target": w.target, "impl": w.impl, "options": Record(w).to_row()["options"], "dtype": w.dtype,
                    "mode": w.mode, "channels": w.channels, "height": w.height, "width": w.width, "tokens": w.tokens,
                    "status": "error", "message": f"no batch search: {str(err).strip().splitlines()[0]}",
                    "max_batch": 0, "usable_bytes": usable, "source": "simulated",
                    "torch_version": question.torch_version if isinstance(question, Question) else ""})
        return row


def _int(v) -> int | None:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def _one(w: Workload, question: Question, seen: dict[int, Record]) -> dict:
    usable = question.usable

    def run(b: int) -> Record:
        return simulate(w.with_batch(b), question, timing=False, cap=usable)

    first = simulate(w, question)  # batch 1 uncapped, timed: the per-image figures
    row = {"target": w.target, "device_name": first.device_name, "impl": w.impl,
           "options": Record(w).to_row()["options"], "dtype": w.dtype, "mode": w.mode, "channels": w.channels,
           "height": w.height, "width": w.width, "tokens": w.tokens, "status": first.status,
           "message": first.message, "backend": first.backend, "per_image_bytes": "", "max_batch": 0,
           "total_bytes": "", "time_s": "", "usable_bytes": usable, "source": "simulated",
           "torch_version": question.torch_version}
    if first.status != "ok":
        return row
    row["per_image_bytes"] = total_bytes(first)
    best, records = largest_batch(run, usable, {b: r for b, r in seen.items() if b != 1} | {1: first},
                                  per_image=bytes_per_image)
    row["max_batch"] = best
    if best:
        at = records[best]
        row["total_bytes"] = total_bytes(at)
        if first.time_s is not None:  # launch costs do not scale with the batch: time the batch itself
            row["time_s"] = at.time_s if at.time_s is not None else simulate(w.with_batch(best), question).time_s
    else:
        row["status"], row["message"] = "oom", "one image does not fit the usable memory"
    return row


def write(rows: list[dict], folder: str | Path) -> Path:
    return files.write_csv(Path(folder) / LARGEST, rows, COLUMNS)


def ensure(folder: str | Path) -> Path | None:
    """A sweep folder's largest.csv, searched from its results.csv when missing, under the
    questions its meta.json holds (else those its rows' columns give); None without results to
    search (no usable memory recorded). A meta.json that cannot be read is left to the report,
    which names it."""
    import json

    from sa_profiler.sweeps.sweep import META, RESULTS, read_rows

    folder = Path(folder)
    path = folder / LARGEST
    if path.exists():
        return path
    rows = read_rows(folder / RESULTS)
    if not any(_int(r.get("usable_bytes")) is not None for r in rows):
        return None
    try:
        questions = [Question.from_json(q) for q in json.loads((folder / META).read_text("utf-8"))["questions"]]
    except (OSError, ValueError, KeyError, TypeError):
        questions = None
    return write(search(rows, questions), folder)
