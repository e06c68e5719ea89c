"""Sweeps on Ray: same rows as the local executor, a killed worker becomes an `error` row that
`--resume` runs again, a measured CPU grid, GPU kinds, and the CLI's one-line errors."""

import csv
import os
import signal
import sys
import threading
import time

import pandas as pd
import pytest
from click.testing import CliRunner

from sa_profiler.targets import gpus

from sa_profiler.sweeps import sweep
from sa_profiler.cli import cli
from sa_profiler.sweeps.executors import LocalExecutor, RayExecutor, gpu_kinds
from sa_profiler.question import make_question

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]  # starts Ray

# what may differ between two runs of one grid: the order rows finish in, and wall-clock times
VOLATILE = ["time_s"]


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def grid(target=None, engine="simulate", batches=(1, 2, 4)):
    return sweep.Sweep(target or make_question(gpus.lookup("t4")), [("reference", {}), ("sdpa", {}), ("chunked", {})],
                       ["float32"], ["forward", "train"], [64], [(16, 16), (32, 32)], list(batches), engine)


def table(rows, drop=()):
    frame = pd.DataFrame(rows).drop(columns=list(drop)).sort_values("key").reset_index(drop=True)
    return frame


def test_simulated_grid_through_ray_gives_the_local_rows(cluster, tmp_path):
    local = sweep.run(grid(), tmp_path / "local")
    remote = sweep.run(grid(), tmp_path / "ray", executor=RayExecutor())
    assert len(remote) == len(grid()) == 36
    pd.testing.assert_frame_equal(table(local), table(remote))
    # results.json lists the rows in grid order whichever finished first
    keys = [w.key for w in grid().workloads()]
    assert [r["key"] for r in remote] == keys


def test_oom_skipping_holds_on_ray(cluster, tmp_path):
    small = make_question(gpus.custom(600 * 2**20), 0)
    spec = sweep.Sweep(small, [("reference", {})], ["float32"], ["train"], [64], [(32, 32), (64, 64)], [1, 2, 4, 8])
    local = sweep.run(spec, tmp_path / "local")
    remote = sweep.run(spec, tmp_path / "ray", executor=RayExecutor())
    pd.testing.assert_frame_equal(table(local), table(remote))
    statuses = {r["status"] for r in remote}
    assert {"ok", "oom", "skipped"} <= statuses


def test_measured_cpu_grid_runs_through_ray(cluster, tmp_path):
    host = make_question(gpus.host(), 0)
    spec = sweep.Sweep(host, [("reference", {}), ("chunked", {})], ["float32"], ["forward", "train"], [16],
                       [(8, 8), (16, 16)], [1, 2], "measure")
    remote = sweep.run(spec, tmp_path / "ray", executor=RayExecutor())
    local = sweep.run(spec, tmp_path / "local")
    assert len(remote) == 16
    assert {r["status"] for r in remote} == {"ok"} and {r["source"] for r in remote} == {"measured"}
    assert all(int(r["peak_bytes"]) > 0 for r in remote)
    # the CPU count is exact: the same bytes in a Ray worker as here; only times differ
    pd.testing.assert_frame_equal(table(local, VOLATILE), table(remote, VOLATILE))


def _slow_on(key, pidfile):
    """A task body that, for one workload, says its pid and waits to be killed."""
    def run(w, question):
        if w.key == key:
            with open(pidfile, "w") as fh:
                fh.write(str(os.getpid()))
            time.sleep(120)
        from sa_profiler.sweeps.sweep import run_workload

        return run_workload(w, question)
    return run


def _kill_when_written(pidfile, killed):
    deadline = time.time() + 60
    while time.time() < deadline:
        if os.path.exists(pidfile) and open(pidfile).read():
            pid = int(open(pidfile).read())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.05)


def test_killed_worker_leaves_error_rows_and_resume_runs_only_those(cluster, tmp_path):
    spec = grid()
    victim = next(w for w in spec.workloads() if w.impl == "sdpa" and w.batch == 2 and w.mode == "train")
    pidfile = str(tmp_path / "pid")
    killed = []
    watcher = threading.Thread(target=_kill_when_written, args=(pidfile, killed))
    watcher.start()
    out = tmp_path / "s"
    rows = sweep.run(spec, out, executor=RayExecutor(fn=_slow_on(victim.key, pidfile)))
    watcher.join()
    assert killed, "the task never started"
    lost = [r for r in rows if r["status"] == "error"]
    assert [r["key"] for r in lost] == [victim.key]
    assert lost[0]["message"].startswith(sweep.LOST) and "Error" in lost[0]["message"]
    # the rest of that configuration ran on (a lost worker is not an OOM)
    same_cfg = [r for r in rows if sweep.config_key(sweep.Record.from_row(r).workload) == sweep.config_key(victim)]
    assert sorted(r["status"] for r in same_cfg) == ["error", "ok", "ok"]
    assert len(rows) == len(spec)

    ran = []

    class Counting(LocalExecutor):
        def submit(self, w, tag, question):
            ran.append(w.key)
            super().submit(w, tag, question)

    final = sweep.run(spec, out, resume=True, executor=Counting())
    assert ran == [victim.key]
    with open(out / sweep.RESULTS, newline="") as fh:
        keys = [r["key"] for r in csv.DictReader(fh)]
    assert len(keys) == len(set(keys)) == len(spec)  # the error row was replaced, nothing doubled
    clean = sweep.run(spec, tmp_path / "clean")
    pd.testing.assert_frame_equal(table(final), table(clean))


def test_a_task_that_raises_is_an_error_row_not_retried(cluster, tmp_path):
    def broken(w, question):
        if w.batch == 4:
            raise ValueError("bad workload")
        from sa_profiler.sweeps.sweep import run_workload

        return run_workload(w, question)

    spec = grid()
    rows = sweep.run(spec, tmp_path / "s", executor=RayExecutor(fn=broken))
    errors = [r for r in rows if r["status"] == "error"]
    assert len(errors) == 12 and all(r["message"] == "ValueError: bad workload" for r in errors)
    assert not any(sweep.lost(r) for r in rows)
    ran = []

    class Counting(LocalExecutor):
        def submit(self, w, tag, question):
            ran.append(w.key)
            super().submit(w, tag, question)

    sweep.run(spec, tmp_path / "s", resume=True, executor=Counting())
    assert ran == []


def test_cli_sweep_on_ray_matches_local(cluster, tmp_path):
    args = ["sweep", "--batch", "1,2", "--channels", "64", "--res", "16,32", "--gpu", "t4", "--mode", "train"]
    r1 = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a"), "--executor", "ray"])
    r2 = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "b")])
    assert r1.exit_code == 0, r1.output
    assert r2.exit_code == 0, r2.output
    a, b = (pd.read_csv(tmp_path / d / "results.csv") for d in "ab")
    pd.testing.assert_frame_equal(table(a), table(b))
    html = (tmp_path / "a" / "report.html").read_text()
    assert "Plotly.newPlot" in html


@pytest.mark.parametrize("args,message", [
    (["--gpu", "all-workers"], "the Ray cluster has no GPU workers"),
    (["--engine", "measure", "--gpu", "a100"], "the Ray cluster has no NVIDIA A100-SXM4-40GB to measure on"),
    (["--engine", "measure", "--gpu-mem", "12G"], "--gpu-mem with --engine measure emulates"),
    (["--engine", "simulate", "--gpu", "all-workers"], "--gpu all-workers measures on the cluster's GPUs"),
    ([], "the Ray cluster has no GPU workers"),
])
def test_cli_ray_target_errors(cluster, tmp_path, args, message):
    result = CliRunner().invoke(cli, ["sweep", "--executor", "ray", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_cli_cpu_measured_sweep_on_ray(cluster, tmp_path):
    result = CliRunner().invoke(cli, ["sweep", "--executor", "ray", "--gpu", "cpu", "--batch", "1", "--channels", "16",
                                      "--res", "8", "--impl", "reference", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "o" / "results.csv")
    assert set(rows.source) == {"measured"} and set(rows.target) == {"cpu"} and set(rows.status) == {"ok"}


def test_all_workers_outside_ray_is_refused(tmp_path):
    result = CliRunner().invoke(cli, ["sweep", "--gpu", "all-workers", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "add --executor ray" in result.output


def test_without_ray_installed_the_error_says_how(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    result = CliRunner().invoke(cli, ["sweep", "--executor", "ray", "--gpu", "t4", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.strip() == 'sa-profile: error: --executor ray needs Ray, which is not installed: pip install -e ".[ray]" in the repository'


def test_gpu_kinds_from_ray_nodes():
    nodes = [
        {"Alive": True, "Resources": {"CPU": 16.0, "GPU": 4.0, "accelerator_type:T4": 1.0}},
        {"Alive": True, "Resources": {"CPU": 32.0, "GPU": 8.0, "accelerator_type:H100": 1.0}},
        {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0, "accelerator_type:T4": 1.0}},
        {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 8.0, "accelerator_type:A100": 1.0}},
        {"Alive": True, "Resources": {"CPU": 64.0}},
        {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}},
    ]
    assert gpu_kinds(nodes) == {"T4": 6, "H100": 8, "GPU": 1}


@pytest.mark.parametrize("address,message", [
    ("127.0.0.1:1", "cannot reach the Ray cluster at 127.0.0.1:1"),
    ("nope", "cannot read --ray-address 'nope': expected auto, HOST:PORT or ray://HOST:PORT"),
    ("host:", "cannot read --ray-address 'host:'"),
])
def test_bad_ray_address_fails_fast(address, message):
    from sa_profiler.sweeps.executors import ExecutorError, check_address

    start = time.time()
    with pytest.raises(ExecutorError, match=message.replace("(", r"\(").replace("[", r"\[").replace("?", r"\?")):
        check_address(address, timeout=2)
    assert time.time() - start < 5
    check_address("auto")  # left to Ray


def test_cli_unreachable_cluster_is_one_line(tmp_path):
    import subprocess

    out = tmp_path / "o"
    proc = subprocess.run([sys.executable, "-c", "from sa_profiler.cli import main; main()", "sweep", "--gpu", "t4",
                           "--executor", "ray", "--ray-address", "127.0.0.1:1", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "sa-profile: error: cannot reach the Ray cluster at 127.0.0.1:1: Connection refused; is `ray start --head` "
        "running there?"]
    assert not out.exists()
