"""One workload of a sweep, run on an engine: what the sweep loop and every executor call.

It sits below both `sweep` and `executors`, so the dependency runs one way
(sweep -> executors -> runner)."""

from __future__ import annotations

from sa_profiler.engine import Record, Workload, measure, simulate

LOST = "worker lost"  # message prefix of rows whose worker died (--resume runs them again)


def run_workload(w: Workload, engine: str, cap: int | None) -> Record:
    """One row of a sweep. Simulated under `cap` (the usable memory), an out-of-memory row
    still says what the step would need (simulated again without the cap), for the plots.
    `engine`: "measure", "simulate", or "simulate@X.Y" (backends chosen as torch X.Y would:
    a plain string, so that every executor hands it to its workers as it is)."""
    if engine == "measure":
        return measure(w, repeats=3)
    _, _, version = engine.partition("@")
    version = version or None
    rec = simulate(w, torch_version=version, cap=cap)
    if rec.status == "oom":
        full = simulate(w, torch_version=version)
        rec.peak_bytes, rec.baseline_bytes, rec.top_tensors, rec.time_s, rec.time_method = (
            full.peak_bytes, full.baseline_bytes, full.top_tensors, full.time_s, full.time_method)
    return rec


def lost(row: dict) -> bool:
    """A row whose worker died (node lost, process killed): `--resume` runs it again."""
    return row.get("status") == "error" and str(row.get("message", "")).startswith(LOST)
