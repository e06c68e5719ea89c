"""The one step runner: every step the tool costs, a single attention layer or a whole model.

A step is a module, its inputs, a loss, an optional optimizer and AMP (`Step`). `run` runs it
on meta tensors, simulated for a target (a `gpus.GPU`, or None for this CPU), or on real CPU
tensors, measured, under the same memory tracker, with the same SDPA routing and the same
guards for the torch release (`attention/routing.py`, `torch_compat/`):

- the tracker costs every storage with the target's allocator model and rules (`tracker_for`);
- the routing sends each SDPA call to the kernel the target runs (a real step: logs torch's);
- `Attribution` names the module behind each allocation and finds the attention layers;
- AMP is CUDA autocast's policy, emulated (`amp.py`), with a grad scaler's scale and unscale;
- inputs with values keep them beside the meta step (`values.py`);
- the optimizer runs after each backward, or after `accumulation` micro-steps of forward, loss
  (divided by `accumulation`) and backward whose gradients add up, as a gradient-accumulation
  loop runs them; of several steps the last is the steady state.

The headline's and the sweep's layer rows (`simulate.py`, `measure.py`) and `fit`'s model steps
come here; each caller keeps only what is its own (building the workload, loading a model,
conversions, verdicts).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from sa_profiler import torch_compat

from sa_profiler.targets import gpus
from sa_profiler.attention import backends
from sa_profiler.attention.routing import AttentionRouting, simulating
from sa_profiler.engine import workspaces
from sa_profiler.engine.allocator import CudaCachingAllocator, ExactAllocator
from sa_profiler.engine.amp import AutocastEmulation
from sa_profiler.engine.attribution import Attribution
from sa_profiler.engine.layouts import ChainedRules, LayoutRules
from sa_profiler.engine.rules import CudaRules
from sa_profiler.engine.tracker import MemoryTracker, local
from sa_profiler.engine.values import InputValues

GRAD_SCALE = 65536.0  # torch.amp.GradScaler's initial scale


@dataclass
class Step:
    """What one step runs. `baseline`: the tensors that exist before it, each group with its
    label (parameters, input); `loss`: the scalar the backward starts from, given the model's
    output; `train=False`: a forward under no_grad; `phases`: name the forward, backward and
    optimizer phases on each allocation (a whole-model step's breakdown reads them)."""

    model: nn.Module
    args: list
    kwargs: dict = field(default_factory=dict)
    baseline: list = field(default_factory=list)
    loss: Callable = None
    train: bool = True
    optimizer: torch.optim.Optimizer | None = None
    steps: int = 1
    amp: torch.dtype | None = None
    values: list | None = None  # (meta tensor, its values on the CPU); None: no values kept at all
    phases: bool = True
    accumulation: int = 1  # micro-steps (forward, loss / accumulation, backward) per optimizer step
    optimizer_scope: Callable | None = None  # a context the optimizer's step runs inside (models/step.py)
    # (model, tracker) -> the model the step trains, built under the tracker before the first
    # step (a DDP wrapper, whose buckets count); None: the model as it is
    wrap: Callable | None = None


@dataclass
class Outcome:
    """What the tracker, the routing and the attribution saw. `grads` and `states`: the
    allocation keys of the gradients and of the optimizer state."""

    tracker: MemoryTracker
    step: Step | None = None
    calls: list = field(default_factory=list)  # the SDPA calls of the last forward
    attribution: Attribution | None = None
    grads: set = field(default_factory=set)
    states: set = field(default_factory=set)


def tracker_for(gpu: gpus.GPU | None, device: str, *, cap: int | None = None, timer=None,
                host: bool = False, first_use_workspaces: bool = False) -> MemoryTracker:
    """The tracker a step on `device` costed for `gpu` (None: this CPU) runs under. `host`: on
    the CPU target, host-side scalars count too (the same memory); `first_use_workspaces`: each
    thread's cuBLAS/cuBLASLt workspace allocated at its first product, as in a fresh process
    (`workspaces.py`), rather than counted into the baseline by the caller."""
    if gpu is not None:
        tracker = MemoryTracker(CudaCachingAllocator(cap), device, rules=ChainedRules(LayoutRules(), CudaRules(gpu)),
                                timer=timer)
        if first_use_workspaces:
            tracker.workspace_bytes = workspaces.sizes(gpu.cublas_workspace)
        return tracker
    kinds = (device, "cpu") if host else device
    return MemoryTracker(ExactAllocator(), kinds, rules=LayoutRules(cuda=False) if device == "meta" else None)


def run(make: Callable[[], Step], tracker: MemoryTracker, caps: backends.DeviceCaps, device: str = "meta", *,
        attribute: bool = False) -> Outcome:
    """Build the step (`make`, under the routing: a layer's kernel choice may depend on the
    device) and run it under `tracker`. Raises what the step raises (`allocator.SimulatedOOM`
    when it runs out of the target's memory, in the baseline too). `attribute`: attribute
    allocations to modules and find the attention layers."""
    with contextlib.ExitStack() as stack:
        if device == "meta":
            routing = stack.enter_context(simulating(caps))
        else:  # a real step: the same mode only logs the SDPA calls torch runs
            routing = AttentionRouting(caps)
            stack.enter_context(torch_compat.checkpoint_scope(routing.reentered))
            stack.enter_context(routing)
        step = make()
        outcome = Outcome(tracker, step)
        if step.phases:
            tracker.phase = "baseline"
        for tensors, label in step.baseline:
            tracker.add_baseline(tensors, label)
        if attribute:
            outcome.attribution = Attribution(step.model, tracker, routing)
            stack.callback(outcome.attribution.close)
        # the CPU target's policy is CPU autocast's; on real tensors torch's own autocast casts
        autocast = (AutocastEmulation(step.amp, "cpu" if caps.kind == "cpu" else "cuda", emulate=device == "meta")
                    if step.amp is not None else None)
        routing.autocast = autocast
        stack.enter_context(tracker)
        if step.wrap is not None:
            step.model = step.wrap(step.model, tracker)
        values = None
        if step.values is not None:  # what is computed from inputs alone, computed for real (values.py)
            attribution = outcome.attribution
            values = InputValues(lambda t: tracker.made_by(t, attribution.innermost() if attribution else ""))
            for tensor, value in step.values:
                values.add(tensor, value)
        params = [p for group in (step.optimizer.param_groups if step.optimizer else []) for p in group["params"]]
        for _ in range(step.steps):
            if tracker.timer is not None:  # the time model costs the last step: the steady state
                tracker.timer.start_step()
            _one(step, tracker, routing, autocast, values, params, outcome)
    return outcome


def _one(step: Step, tracker, routing, autocast, values, params, outcome: Outcome) -> None:
    """One optimizer step: zero_grad, `step.accumulation` micro-steps whose gradients add up (the
    earlier micro-steps' gradients alive through the later forwards), the optimizer."""
    if step.optimizer is not None:
        step.optimizer.zero_grad(set_to_none=True)
    for _ in range(step.accumulation if step.train else 1):
        _micro(step, tracker, routing, autocast, values, outcome)
    if not step.train:
        return
    outcome.grads |= {tracker.key_of.get(local(p.grad).untyped_storage()) for p in params if p.grad is not None}
    if step.phases:
        tracker.phase = "optimizer"
    if step.optimizer is None:
        return
    if autocast is not None:
        for p in params:
            if p.grad is not None:
                p.grad.mul_(1 / GRAD_SCALE)  # GradScaler.unscale_ (in place)
    with step.optimizer_scope() if step.optimizer_scope is not None else contextlib.nullcontext():
        step.optimizer.step()
    outcome.states |= {tracker.key_of.get(local(t).untyped_storage()) for st in step.optimizer.state.values()
                       for t in st.values() if isinstance(t, torch.Tensor) and t.device.type in tracker.device_types}


def _micro(step: Step, tracker, routing, autocast, values, outcome: Outcome) -> None:
    """Forward, loss and backward (a forward alone under no_grad where `step.train` is off).
    With accumulation the loss is divided by it, as a training loop writes `loss / k`."""
    if step.phases:
        tracker.phase = "forward"
    routing.calls.clear()
    with values if values is not None else contextlib.nullcontext():  # not the optimizer: no values there
        if not step.train:
            with torch.no_grad():
                step.model(*step.args, **step.kwargs)
            outcome.calls = list(routing.calls)
            return
        with autocast.region() if autocast is not None else contextlib.nullcontext():
            loss = step.loss(step.model(*step.args, **step.kwargs))
            if step.accumulation > 1:
                loss = loss / step.accumulation
        if autocast is not None:
            loss = loss * GRAD_SCALE
        outcome.calls = list(routing.calls)
        if step.phases:
            tracker.phase = "backward"
        if loss.requires_grad:
            loss.backward()
        del loss
