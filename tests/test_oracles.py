"""The engine held against oracles that do not share its tracker.

`simulate` and `measure` on the CPU use the same dispatch-level tracker, so they agree on its
mistakes (a storage counted twice, a view taken for a new storage, a free missed). Here the
same numbers are checked against:
- PyTorch's own `torch.distributed._tools.mem_tracker.MemTracker` (its own storage weak
  references and its own dispatch mode), to the byte;
- the process heap (glibc `mallinfo2`: bytes in use in malloc's arenas and mmapped chunks),
  read after every op of a real CPU step;
- closed forms for the classic layer (the forward holds the energy and its softmax,
  2 x B x N^2 x itemsize, plus the projections) and for chunked attention, and the N^2
  coefficient of every implementation's peak (training on CUDA adds the two temporaries of the
  softmax backward kernel: 5 x B x N^2).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sa_profiler.engine import Workload, simulate, step

ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}
VARIANTS = [
    ("reference", {}), ("sdpa", {}), ("sdpa", {"backend": "math"}), ("sdpa", {"backend": "flash"}),
    ("sdpa", {"backend": "math", "layout": "pad"}), ("chunked", {"chunk": 16}),
    ("chunked", {"chunk": 16, "checkpoint": True}), ("pooled", {"pool": 2}),
]
IDS = [f"{i}{o or ''}" for i, o in VARIANTS]


# -- PyTorch's MemTracker ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("impl,opts", VARIANTS, ids=IDS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
@pytest.mark.parametrize("mode", ["forward", "train"])
@pytest.mark.parametrize("shape", [(2, 32, 8, 8), (3, 16, 6, 4)], ids=str)
def test_memtracker_agrees_to_the_byte(impl, opts, dtype, mode, shape):
    mem_tracker = pytest.importorskip("torch.distributed._tools.mem_tracker")
    w = Workload(impl, *shape, dtype, mode, "cpu", opts)
    sim = simulate(w)
    layer, x = step.make(w, "cpu")
    layer.requires_grad_(True)  # MemTracker hooks every parameter; under no_grad this costs nothing
    tracker = mem_tracker.MemTracker()
    tracker.track_external(layer, x)
    with tracker:
        step.run(layer, x, mode)
    total = sum(v["Total"] for v in tracker.get_tracker_snapshot("peak").values())
    assert sim.peak_bytes + sim.baseline_bytes == total


# -- the process heap -------------------------------------------------------------------------
class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def _heap_reader():
    """Bytes in use on glibc's heap (arenas + mmapped chunks), or None where there is no mallinfo2."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    fn = getattr(libc, "mallinfo2", None)  # glibc >= 2.33
    if fn is None:
        return None
    fn.restype = _Mallinfo2

    def in_use() -> int:
        m = fn()
        return m.uordblks + m.hblkhd

    return in_use


class _HeapPeak(TorchDispatchMode):
    """The largest heap in use right after any op (its outputs alive, its inputs not yet freed)."""

    def __init__(self, in_use):
        super().__init__()
        self.in_use, self.peak = in_use, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, self.in_use())
        return out


@pytest.mark.parametrize("impl,opts", [v for v in VARIANTS if v != ("sdpa", {})],
                         ids=[i for v, i in zip(VARIANTS, IDS) if v != ("sdpa", {})])
@pytest.mark.parametrize("mode", ["forward", "train"])
def test_process_heap_agrees(impl, opts, mode):
    """A real CPU step of a few to 26 MiB: the heap grows by the simulated peak, within malloc's
    per-chunk overhead and a few Python objects (never less: a storage counted twice fails)."""
    in_use = _heap_reader()
    if in_use is None:
        pytest.skip("needs glibc's mallinfo2")
    opts = {**opts, "chunk": 256} if impl == "chunked" else opts
    w = Workload(impl, 2, 64, 32, 32, "float32", mode, "cpu", opts)
    predicted = simulate(w).peak_bytes
    torch.set_num_threads(1)
    layer, x = step.make(w, "cpu")
    step.run(layer, x, mode)  # warm-up: kernels' one-time buffers are not the step's
    step.clear_grads(layer, x)
    probe = _HeapPeak(in_use)
    start = in_use()
    with probe:
        step.run(layer, x, mode)
    grown = probe.peak - start
    assert predicted > 2**20
    assert predicted - 4096 <= grown <= 1.01 * predicted + 64 * 1024, (grown, predicted)


# -- closed forms -----------------------------------------------------------------------------
def _params(c: int) -> int:
    qk = c // 8
    return 2 * (c * qk + qk) + c * c + c + 1  # query/key/value 1x1 convolutions and gamma


SHAPES = [(1, 16, 8, 8), (2, 32, 6, 4), (3, 64, 16, 16), (2, 8, 16, 16), (1, 128, 4, 4)]


@pytest.mark.parametrize("impl,opts", VARIANTS, ids=IDS)
@pytest.mark.parametrize("dtype", list(ITEMSIZE))
def test_baseline_is_parameters_and_input(impl, opts, dtype):
    s = ITEMSIZE[dtype]
    for b, c, h, w in SHAPES:
        rec = simulate(Workload(impl, b, c, h, w, dtype, "train", "cpu", opts), timing=False)
        assert rec.baseline_bytes == s * (_params(c) + b * c * h * w)


@pytest.mark.parametrize("dtype", list(ITEMSIZE))
def test_classic_forward_closed_form(dtype):
    """Forward (no_grad): query and key B x C' x N, energy and softmax B x N x N, value, the
    output bmm, gamma * out and the residual sum, B x C x N each, all alive at the last add."""
    s = ITEMSIZE[dtype]
    for b, c, h, w in SHAPES:
        n, qk = h * w, c // 8
        rec = simulate(Workload("reference", b, c, h, w, dtype, "forward", "cpu"), timing=False)
        assert rec.peak_bytes == s * (2 * b * n * n + 2 * b * qk * n + 4 * b * c * n)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_chunked_forward_closed_form(dtype):
    """Queries in m chunks of `chunk`: the peak is the last chunk's energy and softmax beside the
    m-1 outputs before it, its softmax and output, or at the end the outputs, their concatenation,
    gamma * out and the residual sum; plus query, key and value throughout."""
    s = ITEMSIZE[dtype]
    for b, c, h, w, chunk in [(1, 16, 8, 8, 16), (2, 32, 6, 5, 10), (3, 64, 16, 16, 64), (2, 8, 16, 16, 256),
                              (1, 128, 4, 4, 4)]:
        n, qk = h * w, c // 8
        m = n // chunk
        end = (4 if m > 1 else 3) * b * c * n
        during = max(2 * b * chunk * n + (m - 1) * b * c * chunk, b * chunk * n + m * b * c * chunk)
        rec = simulate(Workload("chunked", b, c, h, w, dtype, "forward", "cpu", {"chunk": chunk}), timing=False)
        assert rec.peak_bytes == s * (2 * b * qk * n + b * c * n + max(during, end))


def _quadratic(impl, opts, mode, dtype="float32", b=2, c=16, target="cpu"):
    """Coefficients (a, b, c) of peak(N) = a N^2 + b N + c fitted on three sizes, and the
    fourth size's residual (an exact quadratic law leaves none)."""
    sides = (16, 20, 24, 28)
    peaks = [simulate(Workload(impl, b, c, h, h, dtype, mode, target, opts), timing=False).peak_bytes for h in sides]
    tokens = [h * h for h in sides]
    coef = np.linalg.solve(np.array([[t * t, t, 1] for t in tokens[:3]], dtype=float), np.array(peaks[:3], dtype=float))
    t = tokens[3]
    return coef, coef[0] * t * t + coef[1] * t + coef[2] - peaks[3]


# N^2 terms per image and itemsize: energy + softmax in the forward; in training, the softmax
# kept for the backward, its gradient and the energy's gradient; chunked keeps every chunk's
# softmax in training unless it recomputes them; fused attention has none.
N2 = {
    ("reference", "forward"): 2, ("reference", "train"): 3,
    ("sdpa[backend=math]", "forward"): 2, ("sdpa[backend=math]", "train"): 3,
    ("sdpa[backend=flash]", "forward"): 0, ("sdpa[backend=flash]", "train"): 0,
    ("chunked[chunk=16]", "forward"): 0, ("chunked[chunk=16]", "train"): 1,
    ("chunked[checkpoint=True,chunk=16]", "forward"): 0, ("chunked[checkpoint=True,chunk=16]", "train"): 0,
}


@pytest.mark.parametrize("key", list(N2), ids=lambda k: f"{k[0]}-{k[1]}")
def test_n_squared_coefficient_on_cpu(key):
    label, mode = key
    impl, _, rest = label.partition("[")
    opts = {}
    for kv in rest.rstrip("]").split(","):
        if kv:
            k, v = kv.split("=")
            opts[k] = int(v) if v.isdigit() else (v == "True" if v in ("True", "False") else v)
    assert Workload(impl, 1, 16, 4, 4, "float32", mode, "cpu", opts).label == label
    (a, lin, _), residual = _quadratic(impl, opts, mode)
    assert abs(a / (2 * 4) - N2[key]) < 1e-9, a / 8
    assert abs(residual) < 1e-3  # an exact quadratic law in N
    assert lin > 0


@pytest.mark.parametrize("target", ["t4", "a100-80gb", "h100"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("mode,matrices", [("forward", 2), ("train", 5)])
def test_classic_layer_on_cuda_is_its_n_by_n_matrices(target, dtype, mode, matrices):
    """The forum layer on a card: 2 (forward) or 5 (training: softmax kept, its gradient, and the
    softmax backward kernel's contiguous copy and grad * output temporary) N x N matrices per
    image, plus projections of a few B x C x N each."""
    s = ITEMSIZE[dtype]
    for b, c, h, w in [(1, 128, 64, 64), (2, 64, 48, 48), (1, 128, 256, 256)]:
        n = h * w
        rec = simulate(Workload("reference", b, c, h, w, dtype, mode, target), timing=False)
        assert rec.status == "ok", rec.message
        low = matrices * b * n * n * s
        assert low <= rec.peak_bytes <= low + 8 * b * c * n * s + 4 * 2**20, (rec.peak_bytes - low) / (b * c * n * s)


@pytest.mark.parametrize("target", ["t4", "h100"])
@pytest.mark.parametrize("backend", ["efficient", "flash", "cudnn"])
@pytest.mark.parametrize("mode", ["forward", "train"])
def test_fused_attention_grows_as_n(target, backend, mode):
    """Fused kernels never build N x N: doubling the tokens doubles the peak (within the
    allocator's rounding), and the peak stays within a few B x C x N."""
    from sa_profiler.engine.card_keys import resolve

    if backend in ("cudnn", "flash") and resolve(target).capability < (8, 0):
        pytest.skip(f"{backend} attention needs sm80+")
    peaks = []
    for h in (128, 256):
        rec = simulate(Workload("sdpa", 1, 128, h, 256, "float16", mode, target, {"backend": backend}), timing=False)
        assert rec.status == "ok", rec.message
        peaks.append(rec.peak_bytes)
        assert rec.peak_bytes <= 16 * 128 * h * 256 * 2 + 4 * 2**20
    assert 1.9 <= peaks[1] / peaks[0] <= 2.1, peaks
