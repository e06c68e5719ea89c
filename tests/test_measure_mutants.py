"""engine/measure.py's CPU path, field by field: the peak against the simulation (which
shares none of measure.py's code), the baseline against the layer's own parameters, the
timing loop with a clock whose readings are known, and the errors (tests written against
surviving mutants). The CUDA path needs a GPU (tests/test_cuda.py)."""

import importlib
import time

import pytest
import torch

from sa_profiler.attention.sdpa import BackendUnavailable
from sa_profiler.engine import Workload, measure, simulate, step

measure_mod = importlib.import_module("sa_profiler.engine.measure")  # the package exports the function


def _bytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("w", [Workload("reference", 2, 16, 4, 4, "float32", "forward", "cpu"),
                               Workload("sdpa", 1, 16, 4, 4, "float32", "train", "cpu"),
                               Workload("sdpa", 1, 16, 4, 4, "bfloat16", "train", "cpu", {"backend": "flash"})],
                         ids=lambda w: f"{w.impl}-{w.mode}-{w.dtype}")
def test_cpu_measurement(w):
    rec = measure(w, repeats=3)
    sim = simulate(w)
    layer, x = step.make(w, "cpu")
    assert (rec.status, rec.message, rec.source, rec.device_name) == ("ok", "", "measured", "cpu")
    assert rec.workload == w
    assert rec.baseline_bytes == _bytes(list(layer.parameters()) + [x])
    assert rec.peak_bytes == sim.peak_bytes > 0
    assert rec.backend == sim.backend == measure_mod._backend_used(w, "cpu")
    assert [(t.shape, t.dtype, t.bytes) for t in rec.top_tensors] == \
        [(t.shape, t.dtype, t.bytes) for t in sim.top_tensors] != []
    assert rec.time_method == "wall clock, median of 3" and rec.time_s > 0


def test_backend_used_names_the_kernel_torch_picked():
    assert measure_mod._backend_used(Workload("sdpa", 2, 16, 4, 4, "float32", "forward", "cpu"), "cpu") == "math"
    flash = Workload("sdpa", 2, 16, 4, 4, "float32", "forward", "cpu", {"backend": "flash"})
    assert measure_mod._backend_used(flash, "cpu") == "flash"
    assert measure_mod._backend_used(Workload("reference", 2, 16, 4, 4), "cpu") == ""
    names = measure_mod._OpNames()
    assert names.ops == set() and names.backend == ""
    with names:
        torch.ones(2) + 1
    assert "add" in names.ops and names.backend == ""


def test_the_time_is_the_median_of_the_timed_steps(monkeypatch):
    """A clock that reads 0, 3 | 10, 11 | 20, 22 | 30, 30.5 | 40, 47: steps of 3, 1, 2, 0.5 and 7 s,
    median 2; the tracked step runs first and is not timed; grads are cleared before each."""
    readings = iter([0.0, 3.0, 10.0, 11.0, 20.0, 22.0, 30.0, 30.5, 40.0, 47.0])
    calls = []
    run, clear = step.run, step.clear_grads
    monkeypatch.setattr(time, "perf_counter", lambda: next(readings))
    monkeypatch.setattr(step, "run", lambda *a: (calls.append("run"), run(*a))[1])
    monkeypatch.setattr(step, "clear_grads", lambda *a: (calls.append("clear"), clear(*a))[1])
    rec = measure(Workload("reference", 1, 16, 4, 4, "float32", "train", "cpu"), repeats=5)
    assert rec.time_s == 2.0 and rec.time_method == "wall clock, median of 5"
    assert calls == ["run"] + ["clear", "run"] * 5


def test_default_repeats():
    rec = measure(Workload("reference", 1, 8, 2, 2, "float32", "forward", "cpu"))
    assert rec.time_method == "wall clock, median of 5"


def test_an_unavailable_backend_is_unsupported():
    w = Workload("sdpa", 1, 16, 4, 4, "float32", "train", "cpu", {"backend": "efficient"})
    with pytest.raises(BackendUnavailable) as err:
        step.run(*step.make(w, "cpu"), w.mode)
    rec = measure(w, repeats=1)
    assert (rec.status, rec.message, rec.source, rec.device_name) == ("unsupported", str(err.value), "measured", "cpu")
    assert rec.peak_bytes is None and rec.time_s is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer without a CUDA GPU")
def test_a_gpu_target_needs_a_local_gpu():
    with pytest.raises(RuntimeError, match=r"^measuring a GPU target needs a local CUDA GPU; use the simulator "
                                           r"\(--engine simulate\)$"):
        measure(Workload("reference", 1, 8, 2, 2, "float32", "forward", "t4"))
