"""engine/simulate.py's rate helper (`simulations_per_second`, used by the speed benchmarks),
with a clock whose readings are known (tests written against surviving mutants)."""

import importlib

import pytest

from sa_profiler.engine import Workload

simulate_mod = importlib.import_module("sa_profiler.engine.simulate")  # the package exports the function
W = Workload("reference", 1, 8, 2, 2)


@pytest.fixture
def clocked(monkeypatch):
    """simulate() recorded instead of run; the clock reads 10.0 at the start, then the values queued."""
    calls, readings = [], []
    monkeypatch.setattr(simulate_mod, "simulate", lambda w: calls.append(w))
    monkeypatch.setattr(simulate_mod.time, "perf_counter", lambda: readings.pop(0))
    return calls, readings


def test_rate_counts_the_simulations_done_within_the_time(clocked):
    """Start 10.0; checks at 10.3, 10.6, 10.9 run a simulation each; at 11.0 the second is over
    (not under it); the rate is 3 over the 1.2 s read at the end. The warm-up is not counted."""
    calls, readings = clocked
    readings += [10.0, 10.3, 10.6, 10.9, 11.0, 11.2]
    assert simulate_mod.simulations_per_second(W) == pytest.approx(3 / 1.2)
    assert calls == [W] * 4 and readings == []


def test_rate_over_a_longer_time(clocked):
    calls, readings = clocked
    readings += [10.0, 11.0, 12.0, 12.5, 13.0]
    assert simulate_mod.simulations_per_second(W, seconds=2.5) == pytest.approx(2 / 3.0)
    assert calls == [W] * 3 and readings == []


def test_rate_of_real_simulations():
    assert simulate_mod.simulations_per_second(W, seconds=0.05) > 1
