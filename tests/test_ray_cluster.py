"""Joining a running cluster (`ray start --head`, as the README says) by HOST:PORT: the CLI's
sweep runs there and gives the local rows. The cluster lives in its own temporary folder and
only its processes are stopped afterwards."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pandas as pd
import pytest

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]  # starts a local Ray cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(temp_dir: str) -> None:
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if temp_dir.encode() in fh.read():
                    os.kill(pid, signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


@pytest.fixture(scope="module")
def head():
    if ray.is_initialized():
        ray.shutdown()
    if not os.path.isdir("/proc"):
        pytest.skip("needs Linux /proc to stop the cluster's processes")
    temp_dir = tempfile.mkdtemp(prefix="sa-ray-")  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                    "--disable-usage-stats", f"--temp-dir={temp_dir}"], check=True, capture_output=True, timeout=120)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _stop(temp_dir)
        time.sleep(1)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _sweep(out, *extra):
    args = [sys.executable, "-c", "from sa_profiler.cli import main; main()", "sweep", "--gpu", "t4", "--batch", "1,2",
            "--channels", "64", "--res", "16,32", "--mode", "both", "--out", str(out), *extra]
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)


def test_sweep_on_a_running_cluster_gives_the_local_rows(head, tmp_path):
    remote = _sweep(tmp_path / "ray", "--executor", "ray", "--ray-address", head)
    assert remote.returncode == 0, remote.stderr[-2000:]
    local = _sweep(tmp_path / "local")
    assert local.returncode == 0, local.stderr[-2000:]
    a, b = (pd.read_csv(tmp_path / d / "results.csv").sort_values("key").reset_index(drop=True) for d in ("ray", "local"))
    assert len(a) == 24
    pd.testing.assert_frame_equal(a, b)
    meta = (tmp_path / "ray" / "meta.json").read_text()
    assert '"name": "ray"' in meta and '"cpus": 2' in meta
