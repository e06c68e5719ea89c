"""The memory engine: CPU byte-exact invariant, growth laws, routing, catalogue, allocator."""

import json
import subprocess
import sys
import textwrap

import pytest

from sa_profiler.targets import gpus
from sa_profiler.engine import Record, Workload, measure, simulate, to_frame
from sa_profiler.engine.allocator import CudaCachingAllocator, allocation_size, round_size

VARIANTS = [
    ("reference", {}), ("sdpa", {}), ("sdpa", {"backend": "math"}), ("sdpa", {"backend": "flash"}),
    ("sdpa", {"backend": "math", "layout": "pad"}), ("chunked", {"chunk": 16}),
    ("chunked", {"chunk": 16, "checkpoint": True}),
]
SHAPES = [(1, 8, 4, 4), (2, 16, 6, 5), (3, 32, 8, 8), (1, 64, 1, 1)]


@pytest.mark.parametrize("impl,opts", VARIANTS, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
@pytest.mark.parametrize("mode", ["forward", "train"])
def test_cpu_simulation_equals_cpu_measurement_to_the_byte(impl, opts, dtype, mode):
    for b, c, h, w in SHAPES:
        wl = Workload(impl, b, c, h, w, dtype, mode, "cpu", opts)
        sim, meas = simulate(wl), measure(wl, repeats=1)
        assert sim.status == meas.status == "ok", (sim.message, meas.message)
        assert sim.peak_bytes == meas.peak_bytes, wl
        assert sim.baseline_bytes == meas.baseline_bytes
        assert sim.backend == meas.backend
        assert meas.time_s > 0 and "wall clock" in meas.time_method


@pytest.mark.slow
def test_tracker_sees_what_the_process_allocates():
    """A >1 GiB workload on CPU: the child's peak RSS growth is within 5 % of the simulation."""
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/statm")
    w = Workload("reference", 1, 64, 128, 128, "float32", "forward", "cpu")
    predicted = simulate(w).peak_bytes
    assert predicted > 2**30
    code = textwrap.dedent("""
        import resource, torch, json
        from sa_profiler.engine import Workload, step
        torch.set_num_threads(1)
        w = Workload("reference", 1, 64, 128, 128, "float32", "forward", "cpu")
        layer, x = step.make(w, "cpu")
        with torch.no_grad():
            layer(torch.randn(1, 64, 8, 8))  # warm up kernels and thread pools
        # resident now (not the lifetime maximum, which imports may have raised)
        before = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
        step.run(layer, x, w.mode)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps(after - before))
    """)
    grown = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert abs(grown - predicted) <= 0.05 * predicted, (grown, predicted)


def _peaks(impl, res, **kw):
    return [simulate(Workload(impl, 1, 64, r, r, "float16", "train", "t4", kw)).peak_bytes for r in res]


def test_reference_grows_as_n_squared_and_efficient_as_n():
    res = [32, 64, 128]  # N = 1024, 4096, 16384: x4 per step
    ref = _peaks("reference", res)
    eff = _peaks("sdpa", res)
    chunk = _peaks("chunked", res, chunk=256, checkpoint=True)
    for small, big in zip(ref, ref[1:]):
        assert 14 < big / small <= 16.5
    for series in (eff, chunk):
        for small, big in zip(series, series[1:]):
            assert 3.5 < big / small <= 4.5


@pytest.mark.parametrize("target", ["cpu", "t4", "h100"])
@pytest.mark.parametrize("mode", ["forward", "train"])
def test_reference_peak_holds_both_n_by_n_matrices(target, mode):
    b, c, r = 2, 32, 32
    rec = simulate(Workload("reference", b, c, r, r, "float32", mode, target))
    assert rec.peak_bytes >= 2 * b * (r * r) ** 2 * 4
    big = [t for t in rec.top_tensors if t.shape == (b, r * r, r * r)]
    assert len(big) >= 2 and {t.op for t in big} >= {"bmm", "_softmax"}


def test_gpu_training_counts_softmax_backward_temporaries():
    """Five B x N x N buffers at the classic layer's training peak on CUDA, three on CPU."""
    n = 64 * 64
    gpu = simulate(Workload("reference", 1, 64, 64, 64, "float32", "train", "h100"))
    cpu = simulate(Workload("reference", 1, 64, 64, 64, "float32", "train", "cpu"))
    nn = [t for t in gpu.top_tensors if t.shape == (1, n, n)]
    assert len(nn) == 5
    assert sum("softmax backward" in t.note for t in nn) == 2
    assert len([t for t in cpu.top_tensors if t.shape == (1, n, n)]) == 3


@pytest.mark.parametrize("gpu,dtype,layout,torch_version,expected", [
    ("t4", "float16", "auto", None, "efficient"),
    ("t4", "float32", "auto", None, "efficient"),
    ("t4", "float16", "split", None, "efficient"),
    ("a100", "float16", "split", None, "flash"),
    ("a100", "bfloat16", "split", None, "flash"),
    ("a100", "float16", "auto", None, "efficient"),  # unequal head sizes: no flash
    ("a100", "float32", "split", None, "efficient"),
    ("h100", "float16", "split", "2.8.0", "flash"),
    ("h100", "float16", "split", "2.11.0", "cudnn"),  # cuDNN preferred on sm90 (measured)
    ("h100", "float32", "auto", "2.11.0", "efficient"),
    ("rtx-3060", "float16", "split", None, "flash"),
])
def test_backend_routing(gpu, dtype, layout, torch_version, expected):
    w = Workload("sdpa", 1, 64, 16, 16, dtype, "train", gpu, {"layout": layout})
    from sa_profiler.question import make_question

    rec = simulate(w, make_question(gpu, torch_version=torch_version))
    assert rec.status == "ok" and rec.backend == expected


def test_forced_flash_on_t4_is_unsupported_with_reason():
    rec = simulate(Workload("sdpa", 1, 64, 16, 16, "float16", "train", "t4", {"backend": "flash"}))
    assert rec.status == "unsupported"
    assert "flash attention needs compute capability 8.0" in rec.message


def test_bf16_on_t4_is_unsupported():
    rec = simulate(Workload("reference", 1, 64, 16, 16, "bfloat16", "forward", "t4"))
    assert rec.status == "unsupported" and "no bfloat16" in rec.message


def test_efficient_fp16_large_value_head_counts_output_accumulator():
    small = simulate(Workload("sdpa", 1, 128, 32, 32, "float16", "forward", "t4"))
    large = simulate(Workload("sdpa", 1, 256, 32, 32, "float16", "forward", "t4"))
    assert any("output_accum" in t.note for t in large.top_tensors)
    assert not any("output_accum" in t.note for t in small.top_tensors)


def test_simulating_the_forum_case_is_fast_and_needs_no_memory():
    import time
    w = Workload("reference", 1, 128, 256, 256, "float32", "train", "t4")
    start = time.perf_counter()
    rec = simulate(w)
    assert time.perf_counter() - start < 2
    assert rec.peak_bytes > 5 * 17 * 10**9  # five 17 GB matrices on a GPU training step
    assert rec.time_s > 0 and rec.time_method.startswith("estimate")


def test_record_round_trips_through_a_row():
    rec = simulate(Workload("chunked", 2, 16, 4, 4, "float32", "train", "t4", {"chunk": 4}))
    back = Record.from_row(rec.to_row())
    assert back.workload == rec.workload and back.peak_bytes == rec.peak_bytes
    assert back.top_tensors == rec.top_tensors
    frame = to_frame([rec, back])
    assert list(frame.peak_bytes) == [rec.peak_bytes] * 2
    json.dumps(rec.to_json())


@pytest.mark.parametrize("name,key", [
    ("t4", "t4"), ("Tesla T4", "t4"), ("a100-80gb", "a100-80gb"), ("A100 80GB", "a100-80gb"),
    ("NVIDIA H100 80GB HBM3", "h100"), ("rtx 3060", "rtx-3060"), ("GeForce RTX 4090", "rtx-4090"),
])
def test_catalogue_matches_forgivingly(name, key):
    assert gpus.lookup(name).key == key


def test_unknown_gpu_lists_close_matches():
    with pytest.raises(gpus.UnknownGPU, match=r"unknown GPU 'a100-90gb'; did you mean a100-80gb, a100-40gb"):
        gpus.lookup("a100-90gb")


def test_catalogue_entries_are_complete():
    assert len(gpus.CATALOGUE) >= 15
    for gpu in gpus.CATALOGUE.values():
        assert gpu.total_memory > 8 * 2**30 and gpu.fp16_flops >= gpu.fp32_flops > 0
        assert gpu.bandwidth > 1e11 and gpu.source and 0 < gpu.context_bytes < 2**30
    assert gpus.lookup("t4").total_memory == 15095 * 2**20
    assert gpus.lookup("h100").cublas_workspace == 32 * 2**20
    assert gpus.lookup("t4").cublas_workspace == 8519680


def test_custom_target_states_its_assumption():
    gpu = gpus.custom(12 * 2**30)
    assert gpu.total_memory == 12 * 2**30 and "compute capability 8.6" in gpu.assumed
    rec = simulate(Workload("sdpa", 1, 64, 16, 16, "float16", "train", f"custom-{12 * 2**30}"))
    assert rec.status == "ok"


def test_allocator_rounds_and_keeps_large_blocks_whole():
    a = CudaCachingAllocator()
    assert round_size(1) == 512 and round_size(513) == 1024
    assert allocation_size(1000) == 2 * 2**20 and allocation_size(5 * 2**20) == 20 * 2**20
    big = a.malloc(int(11.5 * 2**20))  # 12 MiB segment, 0.5 MiB remainder is not split off
    assert big.size == 12 * 2**20 and a.allocated == 12 * 2**20
    a.free(big)
    small = a.malloc(5 * 2**20)  # reuses the cached 12 MiB block, splitting 7 MiB off
    assert small.size == 5 * 2**20 and a.reserved == 12 * 2**20
    a.free(small)
    again = a.malloc(12 * 2**20)  # merged back into one block
    assert again.size == 12 * 2**20 and a.reserved == 12 * 2**20
    assert a.peak == 12 * 2**20
    assert a.malloc(0) is None
