"""Meta kernels memoised by input layout (sa_profiler/engine/meta_memo.py), the time model's op
descriptions with them (timing.py) and the tracker's short path for aliasing ops (tracker.py
`_view`): a step with them, cold and warm, is the step without them, op by op and byte for byte;
and what the memos must not keep."""

import contextlib
import dataclasses

import pytest
import torch

from sa_profiler.engine import Workload, meta_memo, simulate, timing
from sa_profiler.engine import tracker as tracking
from sa_profiler.models.fit import fit


def _step(w: Workload, made: list, cap=None) -> tuple:
    rec = simulate(w, cap=cap)
    if not made or rec.status == "unsupported":
        return rec.status, rec.message
    t = made[-1]
    ops = [(o.kind, o.precision, o.flops, o.bytes, o.backward) for o in t.timer.ops] if t.timer else None
    return (rec.status, rec.message, rec.peak_bytes, rec.baseline_bytes, rec.backend, rec.time_s,
            [tuple(sorted(x.__dict__.items())) for x in rec.top_tensors], t.timeline, t.op_log, ops, dict(t.ops),
            t.peak_index)


IMPLS = [("reference", {}), ("sdpa", {}), ("sdpa", {"backend": "math"}), ("sdpa", {"backend": "efficient"}),
         ("sdpa", {"backend": "flash"}), ("sdpa", {"backend": "cudnn"}), ("chunked", {"chunk": 100, "checkpoint": True}),
         ("chunked", {"chunk": 256}), ("pooled", {"pool": 2})]
CASES = [Workload(impl, b, c, h, w, dtype, mode, target, opts)
         for impl, opts in IMPLS for dtype in ("float32", "float16", "bfloat16") for mode in ("forward", "train")
         for target, (b, c, h, w) in [("t4", (2, 64, 16, 16)), ("h100", (3, 128, 12, 20)), ("a100-80gb", (1, 256, 8, 8)),
                                      ("cpu", (2, 16, 8, 8))]]


@pytest.fixture
def general(monkeypatch):
    """Within: every op takes the general path, its kernel run (the reference the shortcuts meet)."""
    @contextlib.contextmanager
    def within():
        with meta_memo.disabled(), monkeypatch.context() as m:
            m.setattr(tracking, "SHORT_PATHS", False)
            yield
    return within


@pytest.mark.parametrize("w", CASES, ids=lambda w: f"{w.label}-{w.dtype}-{w.mode}-{w.target}")
def test_a_step_is_the_same_with_the_memo_cold_and_warm(w, trackers, general):
    with general():
        kernels = _step(w, trackers)
    _clear()
    cold = _step(w, trackers)
    assert meta_memo._memo or kernels[0] != "ok"
    assert timing._descriptions or kernels[0] != "ok" or w.target == "cpu"
    warm = _step(w, trackers)
    assert kernels == cold == warm


def test_the_memo_is_used_and_an_out_of_memory_step_is_the_same(trackers, general):
    w = Workload("chunked", 4, 64, 32, 32, "float16", "train", "t4", {"chunk": 256, "checkpoint": True})
    cap = simulate(Workload("chunked", 1, 64, 32, 32, "float16", "train", "t4", {"chunk": 256, "checkpoint": True})).peak_bytes * 3
    with general():
        kernels = _step(w, trackers, cap)
    _clear()
    assert _step(w, trackers, cap) == kernels and kernels[0] == "oom"
    assert meta_memo._memo  # kept up to the op that ran out


@pytest.mark.parametrize("model, inputs, batch, target, amp", [
    ("examples/sagan.py:Generator", 128, 2, "t4", None),
    ("examples/sagan.py:Generator", 128, 2, "t4", "fp16"),
    ("examples/classifier.py:resnet_attn", "3x64x64", 2, "h100", "bf16"),
    ("examples/classifier.py:forum_cnn", "128x32x32", 2, "t4", None),
])
def test_a_whole_model_is_the_same(model, inputs, batch, target, amp, general):
    def answer():
        r = fit(model, inputs, batch, target, amp=amp)
        return {"step": dataclasses.asdict(r.step), **{k: dataclasses.asdict(c) for k, c in r.conversions.items()}}

    with general():
        kernels = answer()
    _clear()
    assert answer() == kernels
    assert answer() == kernels


def _clear():
    meta_memo._memo.clear()
    timing._descriptions.clear()
    timing._views.clear()


def _keep(func, *args, **kwargs):
    meta_memo._memo.clear()
    meta_memo.call(func, args, kwargs)
    return len(meta_memo._memo)


def test_what_is_not_kept():
    aten = torch.ops.aten
    m = torch.empty(4, 6, device="meta")
    assert _keep(aten.add.Tensor, m, m) == 1  # a fresh dense output: kept
    assert _keep(aten.add_.Tensor, m, m) == 0  # mutates its input
    assert _keep(aten.transpose.int, m, 0, 1) == 0  # a view
    assert _keep(aten.detach.default, m) == 0  # an alias
    assert _keep(aten.add.Tensor, torch.ones(2), torch.ones(2)) == 0  # real tensors run their kernel
    assert _keep(aten.mul.Scalar, m, 1 + 2j) == 0  # an argument it does not key (a complex scalar)
    with meta_memo.disabled():
        assert _keep(aten.add.Tensor, m, m) == 0


def test_a_repeat_gives_fresh_tensors_of_the_same_layout():
    aten = torch.ops.aten
    a = torch.empty(3, 5, device="meta").t()
    meta_memo._memo.clear()
    first = meta_memo.call(aten.mul.Tensor, (a, 2), {})
    again = meta_memo.call(aten.mul.Tensor, (a, 2), {})
    other = meta_memo.call(aten.mul.Tensor, (a, 2.0), {})  # a float scalar is another key
    assert len(meta_memo._memo) == 2
    assert again.untyped_storage() is not first.untyped_storage()
    assert (again.shape, again.stride(), again.dtype) == (first.shape, first.stride(), first.dtype)
    assert again.untyped_storage().nbytes() == first.untyped_storage().nbytes()
    i = torch.empty(3, 5, device="meta", dtype=torch.int64)
    assert meta_memo.call(aten.mul.Tensor, (i, 2), {}).dtype == torch.int64
    assert meta_memo.call(aten.mul.Tensor, (i, 2.0), {}).dtype == torch.float32
    assert other.dtype == torch.float32


def test_a_kept_description_is_describes():
    aten = torch.ops.aten
    a, b = torch.empty(2, 8, 16, device="meta"), torch.empty(2, 16, 4, device="meta")
    out = aten.bmm.default(a, b)
    _clear()
    kept = timing._described(aten.bmm.default, (a, b), {}, out)
    assert timing._described(aten.bmm.default, (a, b), {}, out) is kept and len(timing._descriptions) == 1
    assert kept == timing.describe(aten.bmm.default, (a, b), {}, out) and kept.flops == 2 * 2 * 8 * 16 * 4
    real = torch.ones(2, 3)
    timing._described(aten.add.Tensor, (real, real), {}, real + real)  # real tensors: described, not kept
    assert len(timing._descriptions) == 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.bool])
def test_a_view_is_described_as_describe_does(dtype):
    """Ops without a kernel are described by precision and direction alone: the same Op as
    `describe`, for single outputs, lists of outputs, and inputs of another dtype."""
    aten = torch.ops.aten
    x = torch.empty(4, 6, device="meta", dtype=dtype)
    half = torch.empty(4, 6, device="meta", dtype=torch.float16)
    calls = [(aten.transpose.int, (x, 0, 1), {}), (aten.detach.default, (x,), {}), (aten.view.default, (x, [24]), {}),
             (aten.split.Tensor, (x, 2), {}), (aten.expand.default, (half, [2, 4, 6]), {}),
             (aten.empty_like.default, (half,), {"dtype": dtype}), (aten.slice.Tensor, (x, 1, 0, 3), {})]
    _clear()
    pairs = []

    def describe_both():
        for func, args, kwargs in calls:
            out = func(*args, **kwargs)
            assert timing.kind_of(func.overloadpacket.__name__, "fp32") == "view"
            pairs.append((timing._described(func, args, kwargs, out), timing.describe(func, args, kwargs, out)))

    class InBackward(torch.autograd.Function):  # the same ops run by the autograd engine
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            describe_both()
            return grad

    describe_both()
    InBackward.apply(torch.ones(2, requires_grad=True)).sum().backward()
    assert len(pairs) == 2 * len(calls) and all(kept == made for kept, made in pairs)
    assert [kept.backward for kept, _ in pairs] == [False] * len(calls) + [True] * len(calls)
    assert {kept.precision for kept, _ in pairs} == {timing.PRECISION.get(dtype, "fp32"), "fp16"}
    assert not timing._descriptions and len(timing._views) <= 4


@pytest.mark.parametrize("impl, opts", [("sdpa", {}), ("sdpa", {"backend": "flash"}), ("reference", {}),
                                        ("chunked", {"chunk": 128, "checkpoint": True})])
def test_a_batch_search_is_the_same(impl, opts, trackers):
    """Steps of one workload at several batches, in the order a search runs them: a layout kept
    at one batch must never answer for another (kernel temporaries included)."""
    batches = (1, 6, 3, 4, 5, 2)
    with meta_memo.disabled():
        kernels = [_step(Workload(impl, b, 128, 24, 32, "float32", "train", "h100", opts), trackers) for b in batches]
    _clear()
    assert [_step(Workload(impl, b, 128, 24, 32, "float32", "train", "h100", opts), trackers) for b in batches] == kernels


def test_an_op_without_a_readable_schema_runs_its_kernel():
    """The guard on the op's (private) schema: where it is missing, nothing is kept."""
    class Bare:
        def __init__(self, op):
            self.op, self.overloadpacket = op, op.overloadpacket

        def __call__(self, *args, **kwargs):
            return self.op(*args, **kwargs)

    m = torch.empty(4, 6, device="meta")
    assert meta_memo.mutates(Bare(torch.ops.aten.add.Tensor)) and not meta_memo.mutates(torch.ops.aten.add.Tensor)
    assert _keep(Bare(torch.ops.aten.add.Tensor), m, m) == 0
    _clear()
    timing._described(Bare(torch.ops.aten.add.Tensor), (m, m), {}, torch.ops.aten.add.Tensor(m, m))
    assert not timing._descriptions


@pytest.mark.parametrize("short", [True, False], ids=["short path", "general path"])
def test_a_view_of_a_storage_made_before_tracking_is_allocated_there(short, monkeypatch):
    """The tracker counts a storage when it first sees it: a view of a tensor made before the
    step (a buffer the baseline does not hold) allocates that storage at the view, under the
    view's name, on either path; a second view of it allocates nothing."""
    from sa_profiler.engine.allocator import ExactAllocator

    monkeypatch.setattr(tracking, "SHORT_PATHS", short)
    before = torch.empty(4, 8, device="meta", dtype=torch.float16)
    t = tracking.MemoryTracker(ExactAllocator(), "meta")
    t.op_log = []
    with t:
        view = before.t()
        again = before.view(32)
    assert [(name, grown) for name, grown, _ in t.op_log] == [("t", 64), ("view", 0)]
    assert [a.info.op for a in t._live.values()] == ["t"] and t.allocator.allocated == 64
    del view, again
