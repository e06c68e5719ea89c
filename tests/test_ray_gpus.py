"""GPU placement on Ray, on a local cluster that declares two T4s (no real GPU needed): the
probe's errors, and a `--gpu all-workers` sweep whose tasks are placed on GPU workers of that
kind. The measuring itself is replaced by a stand-in that reports what Ray gave the task."""

import json
import os
from dataclasses import replace

import pandas as pd
import pytest
from click.testing import CliRunner

from sa_profiler.sweeps import executors

from sa_profiler.targets import gpus
from sa_profiler.cli import cli

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]  # starts Ray


@pytest.fixture(scope="module")
def t4_cluster():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=2, resources={"accelerator_type:T4": 1}, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


ARGS = ["sweep", "--executor", "ray", "--batch", "1,2", "--channels", "64", "--res", "16", "--impl", "reference",
        "--mode", "train"]


def test_probe_failure_is_one_line(t4_cluster, tmp_path):
    # the declared T4 is not there: torch in the worker sees no CUDA device
    result = CliRunner().invoke(cli, [*ARGS, "--gpu", "all-workers", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "a T4 worker of the Ray cluster could not report its card" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.fixture
def fake_t4(monkeypatch):
    """Stand-ins for the probe and the measurer (defined here, so Ray ships them by value)."""
    def probe():
        return replace(gpus.lookup("t4"), local=True, source="local device cuda:0")

    def measure(w, question):
        from sa_profiler.engine.workload import Record
        from sa_profiler.sweeps.sweep import run_workload

        if question.engine != "measure":
            return run_workload(w, question)
        ids = ray.get_gpu_ids()
        return Record(w, peak_bytes=w.batch * 2**20, baseline_bytes=4096, time_s=1e-3, source="measured",
                      device_name="Tesla T4", message=json.dumps({"gpus": [str(i) for i in ids],
                                                                  "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                                                                  "pid": os.getpid(), "engine": question.engine}))

    monkeypatch.setattr(executors, "_probe_gpu", probe)
    monkeypatch.setattr(executors, "_run_remote", measure)


def test_all_workers_places_measured_tasks_on_each_kind(t4_cluster, fake_t4, tmp_path):
    result = CliRunner().invoke(cli, [*ARGS, "--res", "16,32", "--gpu", "all-workers", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "o" / "results.csv")
    assert set(rows.target) == {"cuda:T4"} and len(rows) == 4
    info = [json.loads(m) for m in rows.message]
    assert all(i["engine"] == "measure" and len(i["gpus"]) == 1 and i["visible"] == i["gpus"][0] for i in info)
    # one measuring process per card, each on its own card for the whole sweep
    cards = {}
    for i in info:
        cards.setdefault(i["pid"], set()).add(i["visible"])
    assert len(cards) == 2 and all(len(v) == 1 for v in cards.values())
    assert len(set.union(*cards.values())) == 2
    meta = json.loads((tmp_path / "o" / "meta.json").read_text())
    assert meta["target"]["key"] == "cuda:T4" and meta["executor"]["kinds"] == {"T4": 2}
    # the T4's memory minus the 10 % headroom, from the card the worker reported
    t4 = gpus.lookup("t4")
    assert set(rows.usable_bytes) == {t4.total_memory - t4.context_bytes - int(t4.total_memory * 0.1)}


def test_named_kind_measures_there_and_a_missing_one_simulates(t4_cluster, fake_t4, tmp_path):
    result = CliRunner().invoke(cli, [*ARGS, "--gpu", "t4", "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(tmp_path / "a" / "results.csv").target) == {"cuda:T4"}
    result = CliRunner().invoke(cli, [*ARGS, "--gpu", "l4", "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "b" / "results.csv")
    assert set(rows.target) == {"l4"} and set(rows.source) == {"simulated"}
    result = CliRunner().invoke(cli, [*ARGS, "--gpu", "l4", "--engine", "measure", "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and "has no NVIDIA L4 to measure on (its GPUs: T4 x2)" in result.output


def test_a_killed_measuring_process_is_a_lost_row_and_is_replaced(t4_cluster, tmp_path):
    import signal
    import threading
    import time

    from sa_profiler.sweeps import sweep
    from sa_profiler.sweeps.executors import RayExecutor
    from sa_profiler.question import make_question

    t4 = make_question(replace(gpus.lookup("t4"), key="cuda:T4", local=False))
    spec = sweep.Sweep(t4, [("reference", {})], ["float32"], ["train"], [64], [(16, 16), (32, 32)], [1, 2, 4],
                       "measure")
    victim = next(w for w in spec.workloads() if w.batch == 2 and w.height == 16)
    pidfile = tmp_path / "pid"

    def measure(w, question):
        from sa_profiler.engine.workload import Record

        if w.key == victim.key:
            pidfile.write_text(str(os.getpid()))
            time.sleep(120)
        return Record(w, peak_bytes=w.batch * 2**20, baseline_bytes=0, source="measured", device_name="Tesla T4",
                      message=str(os.getpid()))

    def kill():
        for _ in range(1200):
            if pidfile.exists() and pidfile.read_text():
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill)
    watcher.start()
    rows = sweep.run(spec, tmp_path / "s", executor=RayExecutor(fn=measure))
    watcher.join()
    by_key = {r["key"]: r for r in rows}
    assert by_key[victim.key]["status"] == "error" and sweep.lost(by_key[victim.key])
    others = [r for k, r in by_key.items() if k != victim.key]
    assert len(others) == 5 and all(r["status"] == "ok" for r in others)  # the sweep went on, on the other card


def test_a_process_with_a_lost_cuda_context_measures_no_more(t4_cluster, tmp_path):
    import time

    from sa_profiler.sweeps import sweep
    from sa_profiler.sweeps.executors import RayExecutor
    from sa_profiler.question import make_question

    t4 = make_question(replace(gpus.lookup("t4"), key="cuda:T4", local=False))
    spec = sweep.Sweep(t4, [("reference", {}), ("sdpa", {})], ["float32"], ["train"], [64], [(16, 16), (32, 32)],
                       [1, 2, 4], "measure")
    victim = next(w for w in spec.workloads() if w.batch == 1 and w.height == 16 and w.impl == "sdpa")

    def measure(w, question):
        from sa_profiler.engine.workload import Record

        time.sleep(0.05)
        stamp = json.dumps({"pid": os.getpid(), "t": time.time()})
        if w.key == victim.key:
            return Record(w, status="error", source="measured", device_name=stamp,
                          message="RuntimeError: illegal memory access; CUDA context lost: illegal memory access")
        return Record(w, peak_bytes=2**20, baseline_bytes=0, source="measured", device_name=stamp)

    rows = sweep.run(spec, tmp_path / "s", executor=RayExecutor(fn=measure))
    stamps = {r["key"]: json.loads(r["device_name"]) for r in rows}
    bad = stamps[victim.key]
    later = [s for k, s in stamps.items() if s["t"] > bad["t"]]
    assert later and all(s["pid"] != bad["pid"] for s in later)
    assert not sweep.lost(next(r for r in rows if r["key"] == victim.key))  # a fault, not a lost worker
