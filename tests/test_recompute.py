"""The chunked layer's checkpoint on meta tensors (attention/recompute.py) against torch's own
`torch.utils.checkpoint(..., use_reentrant=False)`: the same ops, the same allocations and frees
in the same order, the same answers, byte for byte; and torch's checkpoint wherever the mirror
does not apply (real tensors, a missing torch private, torch's defaults switched)."""

import dataclasses
import itertools
import subprocess
import sys

import pytest
import torch
import torch.utils.checkpoint

from sa_profiler.attention import build, recompute
from sa_profiler.engine import Workload, simulate
from sa_profiler.engine import tracker as tracking
from sa_profiler.models.fit import fit


# the mirror needs torch._C._autograd._make_saved_tensor (torch 2.13 and later); before it the
# layer takes torch's own checkpoint, and there is nothing to compare it with
needs_mirror = pytest.mark.skipif(recompute._make_saved_tensor is None,
                                  reason="this torch has no _make_saved_tensor: torch's checkpoint runs")


def _torch_only(monkeypatch):
    monkeypatch.setattr(recompute, "usable", lambda *args: False)


def _step(w: Workload, made: list, cap=None) -> tuple:
    """Everything a simulated step shows: the record, and the tracker's op by op account."""
    rng = torch.get_rng_state()
    rec = simulate(w, cap=cap)
    t = made[-1]
    ops = [(o.kind, o.precision, o.flops, o.bytes, o.backward) for o in t.timer.ops] if t.timer else None
    return (rec.status, rec.message, rec.peak_bytes, rec.baseline_bytes, rec.backend, rec.time_s,
            [tuple(sorted(x.__dict__.items())) for x in rec.top_tensors], t.timeline, t.op_log, ops, dict(t.ops),
            t.peak_index, torch.equal(rng, torch.get_rng_state()))


CASES = [Workload("chunked", b, c, h, w, dtype, "train", target, {"chunk": chunk, "checkpoint": True})
         for target, dtype, (b, c, h, w), chunk in itertools.product(
             ["t4", "h100", "cpu"], ["float32", "float16"], [(2, 64, 16, 16), (1, 16, 12, 20)], [64, 100, 4096])]


@needs_mirror
@pytest.mark.parametrize("w", CASES, ids=lambda w: f"{w.target}-{w.dtype}-{w.batch}x{w.channels}x{w.height}x{w.width}"
                                               f"-chunk{dict(w.options)['chunk']}")
def test_a_simulated_step_is_torchs_checkpoint_byte_for_byte(w, trackers, monkeypatch):
    calls = []
    mirror = recompute.checkpoint
    monkeypatch.setattr(recompute, "checkpoint", lambda *a: calls.append(1) or mirror(*a))
    ours = _step(w, trackers)
    assert calls, "the step did not take the mirror"
    _torch_only(monkeypatch)
    theirs = _step(w, trackers)
    assert len(calls) == -(-w.height * w.width // dict(w.options)["chunk"])  # torch's took none of them
    assert ours[0] == "ok" and ours[7], ours[:2]
    assert ours == theirs


def test_out_of_memory_under_a_cap_is_the_same(trackers, monkeypatch):
    one = Workload("chunked", 1, 64, 32, 32, "float16", "train", "t4", {"chunk": 256, "checkpoint": True})
    w = Workload("chunked", 4, 64, 32, 32, "float16", "train", "t4", {"chunk": 256, "checkpoint": True})
    cap = simulate(one).peak_bytes * 3
    ours = _step(w, trackers, cap)
    _torch_only(monkeypatch)
    theirs = _step(w, trackers, cap)
    assert ours[0] == "oom" and ours == theirs


def _fit_answer(result) -> dict:
    """The step and every conversion: peak, breakdown, top tensors, op by op timeline."""
    return {"step": dataclasses.asdict(result.step),
            **{label: dataclasses.asdict(c) for label, c in result.conversions.items()}}


@needs_mirror
@pytest.mark.parametrize("amp", [None, "fp16"])
def test_a_whole_model_with_the_layer_converted_is_the_same(amp, monkeypatch):
    """fit converts a model's attention to chunked + checkpoint: under AMP the recompute must
    run in the forward's autocast state and routing (the device context torch re-enters)."""
    args = ("examples/sagan.py:Generator", 128, 2, "t4")
    ours = _fit_answer(fit(*args, amp=amp))
    _torch_only(monkeypatch)
    theirs = _fit_answer(fit(*args, amp=amp))
    converted = [k for k in ours if "chunked" in k]
    assert converted and ours[converted[0]]["status"] == "ok" and ours[converted[0]]["timeline"]
    assert ours == theirs


@needs_mirror
def test_real_tensors_keep_torchs_checkpoint(monkeypatch):
    layer = build("chunked", 16, chunk=20, checkpoint=True)
    x = torch.randn(2, 16, 6, 6, requires_grad=True)
    seen = []
    monkeypatch.setattr(recompute, "checkpoint", lambda *a: seen.append(1))
    layer(x)[0].sum().backward()
    assert not seen and x.grad is not None
    assert not recompute.usable(x, x.to("meta"))  # mixed devices: torch's
    assert recompute.usable(x.to("meta"))


@needs_mirror
def test_gradients_on_real_tensors_match_the_mirror_run_on_them():
    """The mirror's autograd wiring, checked where values exist: run on CPU tensors it gives
    torch's gradients (the layer itself never sends real tensors to it)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 7, 4, dtype=torch.float64, requires_grad=True),
               torch.randn(2, 4, 9, dtype=torch.float64, requires_grad=True),
               torch.randn(2, 5, 9, dtype=torch.float64, requires_grad=True))

    def block(a, b, c):
        return torch.bmm(c, torch.softmax(torch.bmm(a, b), dim=-1).transpose(1, 2))

    grads = []
    for run in (recompute.checkpoint, lambda f, *a: torch.utils.checkpoint.checkpoint(f, *a, use_reentrant=False)):
        out = run(block, q, k, v)
        out.pow(2).sum().backward()
        grads.append([t.grad.clone() for t in (q, k, v)])
        for t in (q, k, v):
            t.grad = None
    for ours, theirs in zip(*grads):
        assert torch.equal(ours, theirs)


@needs_mirror
def test_torch_defaults_switched_send_the_layer_to_torch():
    meta = torch.empty(1, device="meta")
    assert recompute.usable(meta)
    with torch.utils.checkpoint.set_checkpoint_early_stop(False):
        assert not recompute.usable(meta)
    with torch.utils.checkpoint.set_checkpoint_debug_enabled(True):
        assert not recompute.usable(meta)
    assert recompute.usable(meta)


def test_a_missing_torch_private_sends_the_layer_to_torch(monkeypatch, trackers):
    """The guard: without `_make_saved_tensor` (another torch) the mirror is not used, and the
    answer is torch's checkpoint's."""
    w = CASES[0]
    ours = _step(w, trackers)
    monkeypatch.setattr(recompute, "_make_saved_tensor", None)
    assert not recompute.usable(torch.empty(1, device="meta"))
    monkeypatch.setattr(recompute, "checkpoint", lambda *a: pytest.fail("mirror used without its privates"))
    assert _step(w, trackers) == ours


def test_a_simulated_checkpointed_step_does_not_import_dynamo():
    code = """
import sys
from sa_profiler.engine import Workload, simulate
rec = simulate(Workload("chunked", 1, 64, 32, 32, "float16", "train", "t4", {"chunk": 256, "checkpoint": True}))
assert rec.status == "ok", rec.message
print("torch._dynamo" in sys.modules)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "False"
