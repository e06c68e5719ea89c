"""engine/workspaces.py: which library handles an op takes, on which thread, and what they hold."""

from __future__ import annotations

import torch

from sa_profiler.engine import workspaces
from sa_profiler.engine.allocator import CudaCachingAllocator
from sa_profiler.engine.tracker import MemoryTracker

MiB = 1024 * 1024


def meta(*shape):
    return torch.empty(*shape, device="meta")


def test_handles_by_op():
    bias, a, b = meta(8), meta(4, 16), meta(16, 8)
    assert workspaces.handles("mm", (a, b)) == ("cuBLAS",)
    assert workspaces.handles("bmm", (meta(2, 4, 16), meta(2, 16, 8))) == ("cuBLAS",)
    assert workspaces.handles("mv", (a, meta(16))) == ("cuBLAS",)
    # addmm with a 1-D bias goes through cuBLASLt's epilogue (its own workspace); a 2-D input does not
    assert workspaces.handles("addmm", (bias, a, b)) == ("cuBLAS", "cuBLASLt")
    assert workspaces.handles("_addmm_activation", (bias, a, b)) == ("cuBLAS", "cuBLASLt")
    assert workspaces.handles("addmm", (meta(4, 8), a, b)) == ("cuBLAS",)
    assert workspaces.handles("baddbmm", (meta(8), meta(2, 4, 16), meta(2, 16, 8))) == ("cuBLAS",)
    assert workspaces.handles("addmm", ()) == ("cuBLAS",)
    assert workspaces.handles("addmm", (1.0, a, b)) == ("cuBLAS",)
    for op in ("add", "convolution", "sum", "_softmax", "matmul", "linear"):
        assert workspaces.handles(op, (a, b)) == ()


def test_sizes():
    assert workspaces.sizes(32 * MiB) == {"cuBLAS": 32 * MiB, "cuBLASLt": MiB}
    assert workspaces.sizes(8519680) == {"cuBLAS": 8519680, "cuBLASLt": 1048576}


class _Probe(torch.autograd.Function):
    seen: list[str] = []

    @staticmethod
    def forward(ctx, x):
        _Probe.seen.append(workspaces.thread())
        return x * 1

    @staticmethod
    def backward(ctx, g):
        _Probe.seen.append(workspaces.thread())
        return g


def test_thread_is_backward_only_inside_autograd():
    _Probe.seen = []
    x = torch.ones(3, requires_grad=True)
    _Probe.apply(x).sum().backward()
    assert _Probe.seen == ["forward", "backward"]
    assert workspaces.thread() == "forward"


def test_thread_without_the_private_function(monkeypatch):
    # torch._C._current_graph_task_id is private: missing, or raising, every op is the forward's
    monkeypatch.delattr(torch._C, "_current_graph_task_id", raising=False)
    _Probe.seen = []
    x = torch.ones(3, requires_grad=True)
    _Probe.apply(x).sum().backward()
    assert _Probe.seen == ["forward", "forward"]


def test_thread_when_the_private_function_raises(monkeypatch):
    def broken():
        raise RuntimeError("no graph task")

    monkeypatch.setattr(torch._C, "_current_graph_task_id", broken, raising=False)
    assert workspaces.thread() == "forward"


def test_a_training_step_allocates_each_workspace_once_at_first_use():
    tracker = MemoryTracker(CudaCachingAllocator(), "meta")
    tracker.workspace_bytes = workspaces.sizes(32 * MiB)
    layer = torch.nn.Linear(16, 8, device="meta")
    x = meta(4, 16).requires_grad_()
    with tracker:
        for _ in range(2):  # the second step allocates nothing more
            layer(x).sum().backward()
    assert tracker.blas_handles == {("cuBLAS", "forward"), ("cuBLASLt", "forward"), ("cuBLAS", "backward")}
    assert tracker.held_workspaces(tracker.workspace_bytes) == 2 * 32 * MiB + MiB
    held = sorted(a.info.bytes for a in tracker._live.values() if a.info.op == "workspace")
    assert held == [MiB, 32 * MiB, 32 * MiB]
    notes = sorted(a.info.note for a in tracker._live.values() if a.info.op == "workspace")
    assert notes == ["cuBLAS workspace (backward thread)", "cuBLAS workspace (forward thread)",
                     "cuBLASLt workspace (forward thread)"]


def test_without_sizes_nothing_is_allocated_but_the_handles_are_known():
    # the layer engine: workspaces held from the warm-up count in the baseline, not in the step
    tracker = MemoryTracker(CudaCachingAllocator(), "meta")
    a = meta(4, 16).requires_grad_()
    with tracker:
        (a @ meta(16, 8)).sum().backward()
    assert tracker.blas_handles == {("cuBLAS", "forward"), ("cuBLAS", "backward")}
    assert not [x for x in tracker._live.values() if x.info.op == "workspace"]
    assert tracker.held_workspaces(workspaces.sizes(8 * MiB)) == 16 * MiB
