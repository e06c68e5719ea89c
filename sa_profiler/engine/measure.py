"""The measurer: a workload run for real, on the local CUDA card or on the CPU."""

from __future__ import annotations

import gc
import statistics
import time

import torch

from sa_profiler.attention import backends
from sa_profiler.attention.sdpa import BackendUnavailable
from sa_profiler.engine import card_keys, runner, step
from sa_profiler.engine.tracker import BACKEND_OPS
from sa_profiler.engine.workload import Record, Workload
from sa_profiler.torch_compat.dispatch import TorchDispatchMode


class _OpNames(TorchDispatchMode):
    """Records which aten ops ran (to name the SDPA backend torch picked)."""

    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))

    @property
    def backend(self) -> str:
        return next((b for op, b in BACKEND_OPS.items() if op in self.ops), "")


def _backend_used(w: Workload, device) -> str:
    """The SDPA backend torch picks for `w`, from the aten op a batch-1 step dispatches to
    (the choice does not depend on the batch)."""
    layer, x = step.make(w.with_batch(1), device)
    names = _OpNames()
    with names:
        step.run(layer, x, w.mode)
    return names.backend


def measure(w: Workload, repeats: int = 5, warmup: int = 1) -> Record:
    """`max_memory_allocated` over the baseline on CUDA (target `cuda`, or a catalogue /
    custom target emulated on the local card with a memory fraction), or the tracker's
    exact count over real CPU tensors (target `cpu`). Time: median of `repeats`."""
    if w.target == card_keys.CPU:
        return _measure_cpu(w, repeats)
    return _measure_cuda(w, repeats, warmup)


def _measure_cpu(w: Workload, repeats: int) -> Record:
    rec = Record(w, source="measured", device_name="cpu")
    try:
        tracker = runner.tracker_for(None, "cpu")
        outcome = runner.run(lambda: step.layer_step(w, "cpu"), tracker, backends.CPU, "cpu")
        layer, x = outcome.step.model, outcome.step.args[0]
        rec.peak_bytes, rec.baseline_bytes = tracker.peak_over_baseline, tracker.baseline
        rec.backend, rec.top_tensors = tracker.backend, tracker.peak_tensors
        del tracker
        times = []
        for _ in range(repeats):
            step.clear_grads(layer, x)
            start = time.perf_counter()
            step.run(layer, x, w.mode)
            times.append(time.perf_counter() - start)
        rec.time_s, rec.time_method = statistics.median(times), f"wall clock, median of {repeats}"
    except BackendUnavailable as err:
        rec.status, rec.message = "unsupported", str(err)
    return rec


def _measure_cuda(w: Workload, repeats: int, warmup: int) -> Record:
    if not torch.cuda.is_available():
        raise RuntimeError("measuring a GPU target needs a local CUDA GPU; use the simulator (--engine simulate)")
    local = card_keys.resolve(card_keys.LOCAL)
    gpu = card_keys.resolve(w.target)
    rec = Record(w, source="measured", device_name=local.name)
    if why := local.supports(w.torch_dtype):
        rec.status, rec.message = "unsupported", why
        return rec
    fraction = None
    if not gpu.local:  # emulate a smaller card: cap what the allocator may reserve
        fraction = min(1.0, gpu.usable_memory / local.total_memory)
        rec.device_name = f"{local.name} capped to {gpu.name}"
    device = torch.device("cuda")
    layer = x = None
    try:
        if fraction is not None:
            torch.cuda.set_per_process_memory_fraction(fraction)
        rec.backend = _backend_used(w, device)
        layer, x = step.make(w, device)
        for _ in range(warmup):  # plain runs: a dispatch mode here would change what is kept alive
            step.clear_grads(layer, x)
            step.run(layer, x, w.mode)
        step.clear_grads(layer, x)
        torch.cuda.synchronize()
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step.run(layer, x, w.mode)
        torch.cuda.synchronize()
        rec.peak_bytes = torch.cuda.max_memory_allocated() - base
        rec.baseline_bytes = base
        times = []
        for _ in range(repeats):
            step.clear_grads(layer, x)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step.run(layer, x, w.mode)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        rec.time_s, rec.time_method = statistics.median(times), f"CUDA events, median of {repeats} after warm-up"
    except torch.cuda.OutOfMemoryError as err:
        rec.status, rec.message = "oom", str(err).splitlines()[0][:300]
    except BackendUnavailable as err:
        rec.status, rec.message = "unsupported", str(err)
    except RuntimeError as err:  # a kernel that refuses the input (seen: cuDNN at very large batches)
        rec.status, rec.message = "error", f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
    finally:
        del layer, x
        gc.collect()
        try:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            if fraction is not None:
                torch.cuda.set_per_process_memory_fraction(1.0)
        except RuntimeError as err:  # the context is unusable after an illegal memory access
            if rec.status == "ok":
                rec.status = "error"
            rec.message = (rec.message + "; " if rec.message else "") + f"CUDA context lost: {str(err).splitlines()[0][:200]}"
    return rec
