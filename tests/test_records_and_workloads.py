"""The engine's records and workloads, exactly: what a sweep writes is what resume reads back,
and a workload rejects what it cannot run (tests written against surviving mutants)."""

import io

import pandas as pd
import pytest
import torch

from sa_profiler.engine import Record, TensorInfo, Workload, simulate, to_frame
from sa_profiler.engine.workload import _str, dtype_name

TOPS = [TensorInfo((1, 64, 64), "float16", 8192, "bmm", "a note", "forward", "attn"),
        TensorInfo((3,), "float32", 512, "sum")]


def _records():
    w = Workload("chunked", 3, 16, 4, 5, "fp16", "train", "t4", {"chunk": 8, "checkpoint": True})
    return [
        Record(w, 1234, 5678, 0.25, "estimate", "ok", "", "measured", "efficient", TOPS, "2.11.0", "Tesla T4", "h"),
        Record(w.with_batch(7), None, None, None, "", "oom", "out of memory: x", "simulated", "", [], "2.13", "", ""),
        Record(Workload("reference", 1, 8, 2, 2), 10, 0, 1e-9, "", "unsupported", "why", "simulated", "math"),
    ]


def _same(a: Record, b: Record):
    for name in ("workload", "peak_bytes", "baseline_bytes", "time_s", "time_method", "status", "message", "source",
                 "backend", "top_tensors", "torch_version", "device_name", "host"):
        assert getattr(a, name) == getattr(b, name), name


@pytest.mark.parametrize("i", range(3))
def test_record_round_trips_through_a_row(i):
    rec = _records()[i]
    _same(Record.from_row(rec.to_row()), rec)


def test_records_round_trip_through_csv():
    recs = _records()
    buf = io.StringIO()
    to_frame(recs).to_csv(buf, index=False)
    buf.seek(0)
    back = [Record.from_row(r) for r in pd.read_csv(buf).to_dict("records")]
    for a, b in zip(back, recs):
        _same(a, b)


def test_row_fields():
    rec = _records()[0]
    row = rec.to_row()
    assert row["options"] == '{"checkpoint": true, "chunk": 8}'
    assert row["tokens"] == 20 and row["key"] == rec.workload.key
    assert row["key"] == "chunked[checkpoint=True,chunk=8]|3|16|4|5|float16|train|t4"
    assert row["impl"] == "chunked" and row["batch"] == 3 and row["dtype"] == "float16"
    assert row["peak_bytes"] == 1234 and row["host"] == "h" and row["status"] == "ok"
    assert "workload" not in row
    assert row["top_tensors"].startswith('[{"shape": [1, 64, 64], "dtype": "float16", "bytes": 8192, "op": "bmm"')
    doc = rec.to_json()
    assert doc["options"] == {"checkpoint": True, "chunk": 8}
    assert doc["top_tensors"][0] == {"shape": (1, 64, 64), "dtype": "float16", "bytes": 8192, "op": "bmm",
                                     "note": "a note", "phase": "forward", "module": "attn",
                                     "attention": False}
    assert doc["peak_bytes"] == 1234 and doc["key"] == row["key"]


def test_from_row_defaults_and_forms():
    row = {"impl": "sdpa", "batch": "2", "channels": "8", "height": "3", "width": "3", "dtype": "bf16",
           "mode": "forward", "target": "cpu", "options": {"backend": "math"}, "top_tensors": [
               {"shape": [2], "dtype": "float32", "bytes": 8, "op": "mul"}]}
    rec = Record.from_row(row)
    assert rec.workload == Workload("sdpa", 2, 8, 3, 3, "bfloat16", "forward", "cpu", {"backend": "math"})
    assert rec.status == "ok" and rec.source == "simulated" and rec.message == "" and rec.backend == ""
    assert rec.peak_bytes is None and rec.time_s is None and rec.host == "" and rec.torch_version == ""
    assert rec.top_tensors == [TensorInfo((2,), "float32", 8, "mul", "", "", "")]
    nan = float("nan")
    rec = Record.from_row({**row, "options": "", "top_tensors": "", "peak_bytes": nan, "baseline_bytes": "",
                           "time_s": "", "status": nan, "source": None, "time_method": nan})
    assert rec.workload.options == () and rec.top_tensors == []
    assert rec.peak_bytes is None and rec.baseline_bytes is None and rec.time_s is None
    assert rec.status == "ok" and rec.source == "simulated" and rec.time_method == ""
    rec = Record.from_row({**row, "peak_bytes": 12.0, "baseline_bytes": "3", "time_s": "0.5"})
    assert rec.peak_bytes == 12 and rec.baseline_bytes == 3 and rec.time_s == 0.5


def test_str_of_missing_values():
    assert _str(None) == "" and _str(float("nan")) == "" and _str(1.5) == "1.5" and _str("x") == "x"
    assert _str(0) == "0"


@pytest.mark.parametrize("field,value", [("batch", 0), ("channels", 0), ("height", 0), ("width", -1)])
def test_workload_rejects_sizes_below_one(field, value):
    args = {"impl": "reference", "batch": 1, "channels": 8, "height": 2, "width": 2, field: value}
    with pytest.raises(ValueError, match=f"^{field} must be >= 1, got {value}$"):
        Workload(**args)


def test_workload_forms():
    with pytest.raises(ValueError, match="^unknown mode 'both'; expected one of forward, train$"):
        Workload("reference", 1, 8, 2, 2, mode="both")
    with pytest.raises(ValueError, match="^unknown dtype 'int8'; expected fp32, fp16, bf16 or fp64"):
        Workload("reference", 1, 8, 2, 2, "int8")
    w = Workload("sdpa", 2, 8, 3, 5, "HALF", "train", "h100", {"layout": "pad", "backend": "math"})
    assert w.dtype == "float16" and w.torch_dtype == torch.float16
    assert w.options == (("backend", "math"), ("layout", "pad"))
    assert w.label == "sdpa[backend=math,layout=pad]" and w.tokens == 15
    assert Workload("reference", 1, 8, 2, 2).label == "reference"
    b = w.with_batch(9)
    assert b == Workload("sdpa", 9, 8, 3, 5, "fp16", "train", "h100", {"backend": "math", "layout": "pad"})
    assert b.key == "sdpa[backend=math,layout=pad]|9|8|3|5|float16|train|h100"
    assert dtype_name(torch.bfloat16) == "bfloat16" and dtype_name("FP64") == "float64"
    assert dtype_name("float32") == "float32" and dtype_name("bf16") == "bfloat16"


def test_simulated_record_is_complete():
    rec = simulate(Workload("reference", 2, 16, 8, 8, "float16", "train", "t4"))
    assert rec.status == "ok" and rec.source == "simulated" and rec.device_name == "Tesla T4"
    assert rec.backend == "" and rec.time_s > 0 and rec.time_method
    assert rec.top_tensors and rec.top_tensors[0].bytes == max(t.bytes for t in rec.top_tensors)
    assert all(t.bytes > 0 and t.op for t in rec.top_tensors)
    assert len(rec.top_tensors) <= 12
    sizes = [t.bytes for t in rec.top_tensors]
    assert sizes == sorted(sizes, reverse=True)


# -- the tracker --------------------------------------------------------------------------------
def test_tensors_in_nested_arguments():
    from sa_profiler.engine.tracker import tensors_in

    a, b, c = (torch.empty(i + 1, device="meta") for i in range(3))
    found = tensors_in({"x": a, "y": [b, (c, 3)], "z": "text"})
    assert [t.shape[0] for t in found] == [1, 2, 3]
    assert tensors_in(7) == [] and tensors_in(a) == [a]


def _cpu_tracker(devices=("meta", "cpu")):
    from sa_profiler.engine.allocator import ExactAllocator
    from sa_profiler.engine.tracker import MemoryTracker

    return MemoryTracker(ExactAllocator(), devices)


def test_tracker_counts_every_device_it_is_given():
    tracker = _cpu_tracker()
    assert tracker.device_types == ("meta", "cpu")
    assert tracker.peak_tensors == [] and tracker.peak_over_baseline == 0 and tracker.backend == ""
    with tracker:
        x = torch.ones(10, device="meta") * 2
        y = torch.ones(5) + 1
        z = torch.ones(3, device="meta").to(torch.float64)
    # the peak: x (meta), y (cpu), and the last ones beside its float64 copy; each ones freed after use
    assert tracker.allocator.peak == 10 * 4 + 5 * 4 + 3 * 4 + 3 * 8
    assert sorted(t.bytes for t in tracker.peak_tensors) == [12, 20, 24, 40]
    assert tracker.ops == {"ones": 3, "mul": 1, "add": 1, "_to_copy": 1}
    assert all(t.module == "" and t.phase == "" and t.note == "" for t in tracker.peak_tensors)
    assert tracker.peak_index is None and tracker.timeline is None  # no timeline asked for
    del x, y, z
    assert _cpu_tracker("cpu").device_types == ("cpu",)


def test_baseline_and_a_workspace_at_the_peak():
    tracker = _cpu_tracker("meta")
    weights, bias = torch.empty(10, device="meta"), torch.empty(3, device="meta")
    tracker.add_baseline([weights])
    tracker.add_baseline([bias, weights], label="input")  # adds to it; a storage already seen is not counted again
    assert tracker.baseline == 52 and tracker.allocator.allocated == 52
    tracker.phase = "optimizer"
    tracker.workspace_bytes = {"cuBLAS": 1000, "cuBLASLt": 10}
    with tracker:
        y = torch.mm(torch.empty(2, 3, device="meta"), torch.empty(3, 2, device="meta"))  # 24 + 24 + 16 bytes
    assert tracker.baseline == 52  # a workspace allocated in the step is not baseline
    assert tracker.peak_over_baseline == 1064  # both operands, the product and the cuBLAS workspace
    work = [t for t in tracker.peak_tensors if t.op == "workspace"]
    assert work == [TensorInfo((1000,), "uint8", 1000, "workspace", "cuBLAS workspace (forward thread)", "optimizer", "")]
    assert not [t for t in tracker.peak_tensors if t.op == "baseline"]  # the baseline is never in the peak
    del y


# -- the CUDA caching allocator model -------------------------------------------------------------
MiB = 2**20


def test_allocator_sizes():
    from sa_profiler.engine.allocator import allocation_size, block_bytes, round_size

    assert [round_size(n) for n in (0, 1, 511, 512, 513, 1024, 1025)] == [512, 512, 512, 512, 1024, 1024, 1536]
    assert allocation_size(1) == 2 * MiB and allocation_size(MiB) == 2 * MiB
    assert allocation_size(MiB + 512) == 20 * MiB and allocation_size(10 * MiB - 512) == 20 * MiB
    assert allocation_size(10 * MiB) == 10 * MiB and allocation_size(10 * MiB + 1) == 12 * MiB
    assert block_bytes(None) == 0 and block_bytes(123) == 123


def test_small_pool_splits_and_merges():
    from sa_profiler.engine.allocator import CudaCachingAllocator

    a = CudaCachingAllocator()
    x = a.malloc(100)  # a 2 MiB small segment, split: 512 used
    y = a.malloc(1000)
    assert (x.size, y.size) == (512, 1024) and y.addr == x.addr + 512 and x.small and y.small
    assert a.allocated == 1536 and a.reserved == 2 * MiB and a.peak == 1536
    a.free(x)
    z = a.malloc(512)  # best fit: the freed 512-byte block, not the 2 MiB remainder
    assert z.addr == x.addr and a.reserved == 2 * MiB
    a.free(z)
    a.free(y)  # merges with both neighbours: the segment is one free block again
    assert a.allocated == 0
    whole = a.malloc(MiB)  # fits the merged free segment from its start: no new segment
    assert whole.addr == x.addr and whole.size == MiB and a.reserved == 2 * MiB
    assert a.peak == MiB and a.peak_reserved == 2 * MiB


def test_large_pool_rules():
    from sa_profiler.engine.allocator import CudaCachingAllocator

    a = CudaCachingAllocator()
    b = a.malloc(3 * MiB)  # a 20 MiB segment; 17 MiB split off (more than 1 MiB remains)
    assert b.size == 3 * MiB and not b.small and a.reserved == 20 * MiB
    c = a.malloc(16 * MiB + 512)  # takes the 17 MiB rest whole: less than 1 MiB would remain
    assert c.size == 17 * MiB and a.allocated == 20 * MiB and a.reserved == 20 * MiB
    d = a.malloc(MiB)  # small: its own 2 MiB segment, never a large block
    assert d.small and a.reserved == 22 * MiB
    a.free(b)
    e = a.malloc(2 * MiB)  # reuses the freed 3 MiB block whole (1 MiB remains: not split)
    assert e.addr == b.addr and e.size == 3 * MiB
    assert a.peak == 20 * MiB + MiB and a.peak_reserved == 22 * MiB


def test_cap_releases_free_segments_then_runs_out():
    from sa_profiler.engine.allocator import CudaCachingAllocator, SimulatedOOM

    a = CudaCachingAllocator(cap=40 * MiB)
    first = a.malloc(12 * MiB)  # a 12 MiB segment
    second = a.malloc(20 * MiB)  # a 20 MiB segment: 32 MiB reserved
    a.free(first)
    third = a.malloc(14 * MiB)  # no free block fits, 32 + 14 > 40: the free 12 MiB segment is released
    assert a.reserved == 34 * MiB and third.size == 14 * MiB and a.peak_reserved == 34 * MiB
    with pytest.raises(SimulatedOOM, match="tried to allocate 20971520 bytes with 35651584 allocated and "
                                           "35651584 reserved of a 41943040-byte cap"):
        a.malloc(8 * MiB)  # below 10 MiB: asks a 20 MiB segment, which does not fit
    del second


# -- simulate's outcomes ------------------------------------------------------------------------
def test_simulate_outcomes():
    from sa_profiler.targets import gpus

    t4 = gpus.lookup("t4")
    rec = simulate(Workload("reference", 1, 16, 8, 8, "bfloat16", "train", "t4"))
    assert (rec.status, rec.message, rec.device_name) == ("unsupported", t4.supports(torch.bfloat16), "Tesla T4")
    assert rec.peak_bytes is None and rec.baseline_bytes is None
    rec = simulate(Workload("sdpa", 1, 16, 8, 8, "float16", "train", "t4", {"backend": "flash"}))
    assert rec.status == "unsupported" and rec.message.startswith("SDPA backend 'flash' cannot run this input on sm75")
    rec = simulate(Workload("chunked", 1, 16, 8, 8, "float16", "train", "t4", {"chunk": 0}))
    assert (rec.status, rec.message) == ("error", "ValueError: chunk must be >= 1 query pixels, got 0")
    rec = simulate(Workload("sdpa", 4, 128, 64, 64, "float16", "train", "t4"), cap=32 * MiB)
    assert rec.status == "oom" and rec.message.startswith("out of memory (simulated): tried to allocate 20971520 bytes")
    assert rec.backend == "efficient" and rec.baseline_bytes == 4237312 and rec.peak_bytes is None


def test_simulate_baseline_time_and_device():
    from sa_profiler.targets import gpus

    t4 = gpus.lookup("t4")
    w = Workload("reference", 1, 16, 8, 8, "float16", "train", "t4")
    untimed = simulate(w, timing=False)
    timed = simulate(w)
    # seven parameter tensors of one 512-byte block each, the input, and cuBLAS's workspace once a matmul ran,
    # one per thread that multiplied: the forward's and autograd's (engine/workspaces.py)
    assert untimed.baseline_bytes == 7 * 512 + 16 * 64 * 2 + 2 * t4.cublas_workspace == timed.baseline_bytes
    assert untimed.time_s is None and untimed.time_method == ""
    assert timed.time_s > 0 and timed.time_method.startswith("estimate")
    assert untimed.peak_bytes == timed.peak_bytes
    sdpa = simulate(Workload("sdpa", 1, 128, 64, 64, "float16", "train", "t4"))
    assert sdpa.backend == "efficient" and sdpa.baseline_bytes == 1091584  # no matmul: no cuBLAS workspace
    cpu = simulate(Workload("reference", 1, 16, 8, 8, "float16", "train", "cpu"))
    assert cpu.device_name == "cpu" and cpu.time_s is None and cpu.baseline_bytes == 2 * (341 + 16 * 64)


# -- step and targets ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["forward", "train"])
@pytest.mark.parametrize("device", ["meta", "cpu", torch.device("meta")])
def test_step_make_and_run(mode, device):
    from sa_profiler.engine import step

    layer, x = step.make(Workload("reference", 2, 16, 4, 3, "float64", mode, "cpu"), device)
    assert x.shape == (2, 16, 4, 3) and x.dtype == torch.float64 and x.device.type == torch.device(device).type
    assert all(p.dtype == torch.float64 and p.device.type == x.device.type for p in layer.parameters())
    assert x.requires_grad == (mode == "train") and layer.training == (mode == "train")
    assert all(p.requires_grad == (mode == "train") for p in layer.parameters())
    if x.device.type == "cpu":
        assert x.abs().sum() > 0  # random, not empty memory
        step.run(layer, x, mode)
        grads = [p.grad for p in layer.parameters()] + [x.grad]
        assert all((g is not None) == (mode == "train") for g in grads)
        step.clear_grads(layer, x)
        assert all(p.grad is None for p in layer.parameters()) and x.grad is None


def test_targets():
    from sa_profiler.targets import gpus
    from sa_profiler.engine import card_keys

    from sa_profiler.question import make_question

    assert card_keys.resolve("cpu") is None and make_question("cpu").key == "cpu"
    custom = card_keys.resolve("custom-12884901888")
    assert (custom.key, custom.total_memory) == ("custom-12884901888", 12 * 2**30)
    capped = card_keys.resolve("h100@12884901888")
    assert capped.total_memory == 12 * 2**30 and capped.name == "NVIDIA H100 80GB HBM3 capped to 12 GiB"
    assert make_question(capped).key == "h100@12884901888" and make_question(gpus.lookup("t4")).key == "t4"
    assert card_keys.resolve("t4") == gpus.lookup("t4")
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:T4"):
            with pytest.raises(ValueError, match=f"^target '{name}' needs a local CUDA GPU, and torch sees none$"):
                card_keys.resolve(name)


def test_a_one_byte_peak_is_recorded():
    tracker = _cpu_tracker("meta")
    with tracker:
        flag = torch.empty((), dtype=torch.bool, device="meta")
    assert tracker.peak_over_baseline == 1
    assert tracker.peak_tensors == [TensorInfo((), "bool", 1, "empty", "", "", "")]
    del flag


def test_op_log_and_timeline_of_a_gpu_step():
    """What the per-op probes and fit's timeline read: each op's new output bytes and hidden
    bytes, and the allocated high point per op (kernel temporaries included)."""
    from sa_profiler.targets import gpus
    from sa_profiler.engine import step
    from sa_profiler.engine.allocator import CudaCachingAllocator, round_size
    from sa_profiler.engine.layouts import ChainedRules, LayoutRules
    from sa_profiler.engine.rules import CudaRules
    from sa_profiler.engine.tracker import MemoryTracker

    gpu = gpus.lookup("t4")
    tracker = MemoryTracker(CudaCachingAllocator(), "meta", rules=ChainedRules(LayoutRules(), CudaRules(gpu)))
    tracker.op_log, tracker.timeline = [], []
    layer, x = step.make(Workload("reference", 2, 16, 16, 16, "float32", "train", "t4"), "meta")
    tracker.add_baseline(list(layer.parameters()) + [x])
    tracker.phase, tracker.module = "step", "attn"  # as a whole-model step sets them
    with tracker:
        step.run(layer, x, "train")
    matrix = round_size(2 * 256 * 256 * 4)  # one B x N x N float32
    log = {name: (out, hidden) for name, out, hidden in tracker.op_log}
    assert log["_softmax_backward_data"] == (matrix, 2 * matrix)  # its output; a contiguous copy and grad * out
    assert log["_softmax"] == (matrix, 0) and log["view"] == (0, 0)
    assert len(tracker.op_log) == len(tracker.timeline) == sum(tracker.ops.values())
    highs = [high for _, high, _, _ in tracker.timeline]
    assert max(highs) == tracker.allocator.peak
    assert tracker.timeline[tracker.peak_index][0] == "_softmax_backward_data"
    assert tracker.timeline[tracker.peak_index][1] == tracker.allocator.peak
    assert {(phase, module) for _, _, phase, module in tracker.timeline} == {("step", "attn")}
    assert {(t.phase, t.module) for t in tracker.peak_tensors} == {("step", "attn")}
    notes = sorted(t.note for t in tracker.peak_tensors if t.op == "_softmax_backward_data" and t.note)
    assert notes == ["contiguous copy of grad_output inside softmax backward", "grad * output temporary of softmax backward"]


@pytest.mark.parametrize("keep", [False, True])
def test_peak_live_only_when_asked(keep):
    tracker = _cpu_tracker("meta")
    assert tracker.keep_peak_live is False and tracker.peak_live == []
    tracker.keep_peak_live = keep
    with tracker:
        x = torch.empty(4, device="meta") * 3
    if keep:  # every allocation alive at the peak: the empty tensor and the product
        assert sorted(info.bytes for _, info in tracker.peak_live) == [16, 16]
        assert tracker.key_of[x.untyped_storage()] in {key for key, _ in tracker.peak_live}
    else:
        assert tracker.peak_live == []
    del x


def test_fresh_allocator_and_exact_cap():
    from sa_profiler.engine.allocator import CudaCachingAllocator

    a = CudaCachingAllocator(cap=2 * MiB)
    assert (a.allocated, a.peak, a.reserved, a.peak_reserved) == (0, 0, 0, 0)
    x = a.malloc(100)  # a 2 MiB segment fills the cap exactly: it fits
    assert a.reserved == 2 * MiB == a.cap and x.size == 512
    b = CudaCachingAllocator(cap=22 * MiB)
    b.free(b.malloc(100))  # a cached, entirely free small segment
    b.malloc(20 * MiB)  # 2 + 20 = 22 MiB: fits without releasing the cached segment
    assert b.reserved == 22 * MiB


def test_segments_never_overlap():
    from sa_profiler.engine.allocator import CudaCachingAllocator

    a = CudaCachingAllocator()
    blocks = [a.malloc(12 * MiB) for _ in range(3)] + [a.malloc(100) for _ in range(2)] + [a.malloc(2 * MiB)]
    spans = sorted((b.addr, b.addr + b.size) for b in blocks)
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:])), spans


def test_a_segment_split_three_ways_merges_back_and_is_released():
    """Blocks split off a split-off block keep their neighbours: freed in any order, the segment
    is one free block again, which the cap then returns to the driver."""
    from sa_profiler.engine.allocator import CudaCachingAllocator

    a = CudaCachingAllocator(cap=20 * MiB)
    first = a.malloc(100)
    a.free(first)  # merges with the rest of its segment (the first free block ever made)
    assert [(size, addr) for size, addr, _ in a._free[True]] == [(2 * MiB, first.addr)]
    x, y, z = a.malloc(512), a.malloc(1024), a.malloc(512)
    a.free(y)
    w = a.malloc(512)  # best fit: y's 1024-byte block, split
    assert w.addr == y.addr
    for block in (x, w, z):  # w merges x, itself and the block split off after it; z merges last
        a.free(block)
    assert a.allocated == 0
    assert [(size, addr) for size, addr, _ in a._free[True]] == [(2 * MiB, x.addr)]
    big = a.malloc(20 * MiB)  # 2 + 20 > 20 MiB: the free small segment is released, then 20 fits exactly
    assert big.size == 20 * MiB and a.reserved == 20 * MiB and a._free[True] == []


def test_simulate_follows_the_torch_version():
    """SDPA's backend priority moved between torch releases: for this training step an H100 runs
    cuDNN attention on torch 2.11, the memory-efficient kernel on torch 2.4 (backends.py)."""
    w = Workload("sdpa", 1, 128, 16, 16, "float16", "train", "h100")
    from sa_profiler.question import make_question

    assert simulate(w, make_question("h100", torch_version="2.4"), timing=False).backend == "efficient"
    assert simulate(w, make_question("h100", torch_version="2.11"), timing=False).backend == "cudnn"


def test_op_log_and_timeline_without_rules():
    tracker = _cpu_tracker("meta")
    tracker.op_log, tracker.timeline = [], []
    with tracker:
        x = torch.ones(10, device="meta") * 2
    assert tracker.op_log == [("ones", 40, 0), ("mul", 40, 0)]
    assert tracker.timeline == [("ones", 40, "", ""), ("mul", 80, "", "")]
    del x


def test_baseline_phase_is_never_in_the_peak():
    """Whole-model steps add parameters under phase "baseline" with their own labels."""
    tracker = _cpu_tracker("meta")
    tracker.phase = "baseline"
    weights = torch.empty(100, device="meta")
    tracker.add_baseline([weights], label="parameters")
    tracker.phase = "forward"
    with tracker:
        x = torch.empty(3, device="meta")
    assert [t.bytes for t in tracker.peak_tensors] == [12]
    del x, weights


def test_a_block_merged_with_its_next_neighbour_keeps_the_chain():
    """Free c then b (b absorbs c), split b again, free z: the split-off rest and z merge, so a
    13 MiB request fits in the one 20 MiB segment."""
    from sa_profiler.engine.allocator import CudaCachingAllocator

    a = CudaCachingAllocator()
    first, b, c = a.malloc(3 * MiB), a.malloc(3 * MiB), a.malloc(3 * MiB)
    z = a.malloc(11 * MiB)  # the segment's last 11 MiB, whole
    assert a.reserved == 20 * MiB and z.addr == c.addr + 3 * MiB
    a.free(c)
    a.free(b)  # b merges with its next neighbour c
    x = a.malloc(4 * MiB)  # from b's 6 MiB: 2 MiB split off after it
    a.free(z)  # merges with that 2 MiB rest
    y = a.malloc(13 * MiB)
    assert a.reserved == 20 * MiB and y.addr == x.addr + 4 * MiB
    del first
