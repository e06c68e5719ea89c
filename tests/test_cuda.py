"""Run on a CUDA GPU only (skipped elsewhere): fused backends, measure, OOM handling."""

import gc

import pytest
import torch

from sa_profiler.attention import BackendUnavailable, SDPASelfAttention, build
from sa_profiler.engine import Workload, measure, simulate
from conftest import cuda
from classic_sagan import Self_Attn

pytestmark = [cuda, pytest.mark.cuda]


@pytest.mark.parametrize("backend", ["efficient", "flash", "cudnn", "math", "auto"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_fused_backends_match_classic(backend, dtype):
    torch.manual_seed(0)
    classic = Self_Attn(64, None).cuda().to(dtype)
    with torch.no_grad():
        classic.gamma.fill_(0.7)
    layer = SDPASelfAttention(64, backend=backend).cuda().to(dtype)
    layer.load_state_dict(classic.state_dict())
    x = torch.randn(2, 64, 16, 12, device="cuda", dtype=dtype)
    try:
        got = layer(x)[0]
    except BackendUnavailable as err:
        assert dtype == torch.float32 and backend in ("flash", "cudnn"), err
        assert "runs only float16/bfloat16" in str(err)
        return
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(got.float(), classic(x)[0].float(), rtol=tol, atol=tol)


def test_measure_records_backend_and_peak():
    rec = measure(Workload("sdpa", 2, 64, 32, 32, "float16", "train", "cuda"), repeats=2)
    assert rec.status == "ok" and rec.peak_bytes > 0 and rec.time_s > 0
    assert rec.backend in ("efficient", "cudnn")


def test_oom_is_a_result_and_memory_returns_to_baseline():
    measure(Workload("reference", 1, 64, 16, 16, "float32", "train", "cuda"), repeats=1)  # cuBLAS workspace, handles
    gc.collect()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    w = Workload("reference", 1, 128, 128, 128, "float32", "train", f"custom-{3 * 2**30}")
    rec = measure(w, repeats=1)
    assert rec.status == "oom", rec
    assert torch.cuda.memory_allocated() == before
    again = measure(Workload("sdpa", 1, 64, 16, 16, "float32", "forward", "cuda"), repeats=1)
    assert again.status == "ok"  # the memory fraction was restored


@pytest.mark.parametrize("impl,opts", [("reference", {}), ("sdpa", {}), ("chunked", {"chunk": 256})])
@pytest.mark.parametrize("mode", ["forward", "train"])
def test_simulation_within_published_tolerance(impl, opts, mode):
    w = Workload(impl, 2, 64, 32, 32, "float16", mode, "cuda", opts)
    meas, sim = measure(w, repeats=1), simulate(w)
    assert sim.backend == meas.backend
    assert abs(sim.peak_bytes - meas.peak_bytes) <= max(0.02 * meas.peak_bytes, 4 * 2**20), (sim.peak_bytes, meas.peak_bytes)


def test_reference_on_cuda_matches_build():
    layer = build("reference", 32).cuda()
    out, attn = layer(torch.randn(1, 32, 8, 8, device="cuda"))
    assert attn.shape == (1, 64, 64)
