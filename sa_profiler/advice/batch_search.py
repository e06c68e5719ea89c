"""The largest batch of each configuration of a sweep, by the engine's own search.

A sweep's grid stops at its largest batch; what fits may be far beyond it (95 images where the
grid went to 16). For every configuration (implementation, options, dtype, mode, channels,
resolution, target) this runs `recommend.largest_batch` on the simulator under the target's
usable memory, starting from the grid's own simulated rows (they are not run again); the
sweep writes the answer to `largest.csv` beside results.csv. Measured sweeps are searched on
the simulator too (the column `source` says so)."""

from __future__ import annotations

from pathlib import Path

from sa_profiler.sweeps import files
from sa_profiler.engine import Record, Workload, simulate
from sa_profiler.advice.recommend import bytes_per_image, largest_batch, total_bytes

LARGEST = "largest.csv"
COLUMNS = ["target", "device_name", "impl", "options", "dtype", "mode", "channels", "height", "width", "tokens",
           "status", "message", "backend", "per_image_bytes", "max_batch", "total_bytes", "time_s", "usable_bytes",
           "source"]


def search(rows: list[dict]) -> list[dict]:
    """One row per configuration found in a sweep's rows (in their order), each searched under
    its row's usable memory (`usable_bytes`). Simulated rows of the grid seed the search."""
    from sa_profiler.sweeps.sweep import config_key

    configs: dict[str, tuple[Workload, int]] = {}
    seen: dict[str, dict[int, Record]] = {}
    for r in rows:
        usable = _int(r.get("usable_bytes"))
        if usable is None:
            continue
        rec = Record.from_row(r)
        cfg = config_key(rec.workload)
        configs.setdefault(cfg, (rec.workload.with_batch(1), usable))
        if rec.status in ("ok", "oom") and rec.source == "simulated":
            seen.setdefault(cfg, {})[rec.workload.batch] = rec
    return [_searched(w, usable, seen.get(cfg, {})) for cfg, (w, usable) in configs.items()]


def _searched(w: Workload, usable: int, seen: dict[int, Record]) -> dict:
    try:
        return _one(w, usable, seen)
    except (ValueError, KeyError) as err:  # a target this machine cannot simulate (a cluster's card), an unknown impl
        row = {c: "" for c in COLUMNS}
        row.update({"target": w.target, "impl": w.impl, "options": Record(w).to_row()["options"], "dtype": w.dtype,
                    "mode": w.mode, "channels": w.channels, "height": w.height, "width": w.width, "tokens": w.tokens,
                    "status": "error", "message": f"no batch search: {str(err).strip().splitlines()[0]}",
                    "max_batch": 0, "usable_bytes": usable, "source": "simulated"})
        return row


def _int(v) -> int | None:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def _one(w: Workload, usable: int, seen: dict[int, Record]) -> dict:
    def run(b: int) -> Record:
        return simulate(w.with_batch(b), timing=False, cap=usable)

    first = simulate(w)  # batch 1 uncapped, timed: the per-image figures
    row = {"target": w.target, "device_name": first.device_name, "impl": w.impl,
           "options": Record(w).to_row()["options"], "dtype": w.dtype, "mode": w.mode, "channels": w.channels,
           "height": w.height, "width": w.width, "tokens": w.tokens, "status": first.status,
           "message": first.message, "backend": first.backend, "per_image_bytes": "", "max_batch": 0,
           "total_bytes": "", "time_s": "", "usable_bytes": usable, "source": "simulated"}
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
            row["time_s"] = at.time_s if at.time_s is not None else simulate(w.with_batch(best)).time_s
    else:
        row["status"], row["message"] = "oom", "one image does not fit the usable memory"
    return row


def write(rows: list[dict], folder: str | Path) -> Path:
    return files.write_csv(Path(folder) / LARGEST, rows, COLUMNS)
