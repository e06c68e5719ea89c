"""The simulator: a workload on meta tensors, costed as the target's allocator would."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

import torch

from sa_profiler.attention import backends
from sa_profiler.attention.sdpa import BackendUnavailable
from sa_profiler.engine import card_keys, runner, step, workspaces
from sa_profiler.engine.allocator import SimulatedOOM
from sa_profiler.engine.timing import StepTimer, method as timing_method
from sa_profiler.engine.workload import Record, Workload
from sa_profiler.question import Question

T = TypeVar("T")


def simulate(w: Workload, question: Question | None = None, *, timing: bool = True, cap: int | None = None,
             timer: StepTimer | None = None) -> Record:
    """Peak memory over the baseline that `torch.cuda.max_memory_allocated` (or, for `cpu`, the
    tracker on real tensors) would report for one step of `w`, without running it.
    `question` gives the card (the object itself) and the torch whose rules apply (SDPA backend
    priorities depend on it); without one, the card `w.target` names under the running torch.
    `timing=False` skips the time estimate (engine/timing.py; faster, for batch searches); `cap` (bytes,
    GPU targets) makes the allocator model run out of memory as the card would, fragmentation
    included: the record's status is then `oom`. `timer` (GPU targets) collects the costed ops
    for a caller that wants them (the time model's fit)."""
    gpu = question.gpu if question is not None else card_keys.resolve(w.target)
    version = question.torch_version if question is not None else torch.__version__
    rec = Record(w, source="simulated", device_name=gpu.name if gpu else "cpu", torch_version=version)
    if gpu is not None and (why := gpu.supports(w.torch_dtype)):
        rec.status, rec.message = "unsupported", why
        return rec
    caps = gpu.caps(version) if gpu else backends.CPU
    timer = (timer or StepTimer(gpu)) if gpu is not None and timing else None
    tracker = runner.tracker_for(gpu, "meta", cap=cap, timer=timer)
    tracker.sdpa_math = w.impl == "sdpa"
    try:
        runner.run(lambda: step.layer_step(w, "meta"), tracker, caps)
    except BackendUnavailable as err:
        rec.status, rec.message = "unsupported", str(err)
        return rec
    except SimulatedOOM as err:
        rec.status, rec.message = "oom", f"out of memory (simulated): {err}"
        rec.baseline_bytes, rec.backend = tracker.baseline, tracker.backend
        return rec
    except Exception as err:  # a workload the layer rejects is a result, not a crash
        rec.status, rec.message = "error", f"{type(err).__name__}: {err}".splitlines()[0]
        return rec
    rec.peak_bytes = tracker.peak_over_baseline
    rec.baseline_bytes = tracker.baseline
    if gpu is not None:
        # allocated at a thread's first matrix product and held for the process (workspaces.py):
        # after a warm-up step part of the baseline, not of the peak over it; a training step's
        # backward multiplies on the autograd thread, which holds a second one
        rec.baseline_bytes += tracker.held_workspaces(workspaces.sizes(gpu.cublas_workspace))
    rec.backend = tracker.backend
    rec.top_tensors = tracker.peak_tensors
    if gpu is not None and timing:
        rec.time_s, rec.time_method = tracker.timer.seconds(w), timing_method(gpu)
    return rec


def under_cap(run: Callable[[int | None], T], cap: int | None) -> tuple[T, T | None]:
    """A step run with the usable memory `cap` as the allocator's limit, as the card would run it
    (fragmentation included), and, only where that runs out of memory, run again without the cap
    for what it would need: (capped, uncapped or None). Layers and whole models both go through
    here; a step that runs to its end under the cap is the same step as without it."""
    capped = run(cap)
    if cap is None or capped.status != "oom":
        return capped, None
    return capped, run(None)


def simulations_per_second(w: Workload, seconds: float = 1.0) -> float:
    simulate(w)  # warm-up: first-call costs (op registries, imports) are not per simulation
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        simulate(w)
        n += 1
    return n / (time.perf_counter() - start)
