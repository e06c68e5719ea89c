"""One workload of a sweep, run on an engine: what the sweep loop and every executor call.

It sits below both `sweep` and `executors`, so the dependency runs one way
(sweep -> executors -> runner)."""

from __future__ import annotations

from sa_profiler.engine import Record, Workload, measure, simulate
from sa_profiler.engine.simulate import under_cap
from sa_profiler.question import Question

LOST = "worker lost"  # message prefix of rows whose worker died (--resume runs them again)


def run_workload(w: Workload, question: Question) -> Record:
    """One row of a sweep under `question` (its engine, card, torch and usable memory). Simulated
    under the usable memory as the cap, an out-of-memory row still says what the step would need
    (`under_cap`), for the plots. The question is a frozen value every executor hands to its
    workers as it is."""
    if question.engine == "measure":
        return measure(w, repeats=3)
    rec, full = under_cap(lambda cap: simulate(w, question, cap=cap), question.usable)
    if full is not None:
        rec.peak_bytes, rec.baseline_bytes, rec.top_tensors, rec.time_s, rec.time_method = (
            full.peak_bytes, full.baseline_bytes, full.top_tensors, full.time_s, full.time_method)
    return rec


def lost(row: dict) -> bool:
    """A row whose worker died (node lost, process killed): `--resume` runs it again."""
    return row.get("status") == "error" and str(row.get("message", "")).startswith(LOST)
