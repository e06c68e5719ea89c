"""One whole-model training step on the engine: the model built on the meta device (simulated)
or the CPU (measured under the tracker), converted or fused as asked, its repeated blocks
checkpointed as asked (`blocks.py`), two optimizer steps run (the second is the steady state,
with the optimizer's state there), each of `accumulation` micro-steps, and what came of it
(`StepResult`)."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from sa_profiler import names
from sa_profiler.targets import gpus
from sa_profiler.models import blocks, inputs as model_inputs, parallel
from sa_profiler.engine.amp import DTYPES as AMP_DTYPES
from sa_profiler.question import Parallel, Question
from sa_profiler.attention import backends, convert, fused, is_sagan_attention
from sa_profiler.engine import runner, timing
from sa_profiler.engine.allocator import SimulatedOOM
from sa_profiler.engine.attribution import breakdown, calls_by_module
from sa_profiler.engine.values import ValueBranch
from sa_profiler.engine.workload import TensorInfo
from sa_profiler.models.loading import FitError, _one_line, parse_inputs

OPTIMIZERS = names.OPTIMIZERS


# bitsandbytes, on import (ours, or a model library's), tries to fetch a 4-bit CPU matmul kernel
# from a hub and logs a warning when it cannot; 8-bit AdamW does not use that kernel
# (bitsandbytes/backends/cpu/ops.py): that one record is dropped, the logger is left as it is
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(lambda record: "kernels-community" not in record.getMessage())


def optimizer_available(name: str) -> str | None:
    """None where optimizer `name` can run here, else the one-line reason (`names.optimizer_available`):
    what a plan lists as unavailable, by name."""
    return names.optimizer_available(name)


def _adafactor(params):
    """transformers' Adafactor as people fine-tune with it: a fixed learning rate of 1e-3, no
    relative step, no parameter scaling, no warm-up init (`scale_parameter=False,
    relative_step=False, warmup_init=False, lr=1e-3`). Its state per parameter: the factored
    second moment (a row and a column vector) for a matrix or larger, a full one for a vector;
    no first moment (beta1 None); the step count (an int) and the parameter's RMS (a 0-dim
    tensor, kept in the state). Its `step` is torch ops throughout: with `scale_parameter=False`
    the RMS is stored but never read as a Python number, so nothing calls `.item()` and it runs
    on meta tensors unchanged."""
    from transformers.optimization import Adafactor

    return Adafactor(params, lr=1e-3, scale_parameter=False, relative_step=False, warmup_init=False)


def _adamw8bit(params):
    """bitsandbytes' 8-bit AdamW at its defaults (blockwise quantised state, 256 values a block):
    per parameter of 4,096 elements or more, two uint8 moments, a float32 absmax per block of
    each and the two 256-entry quantile maps; smaller ones keep float32 moments."""
    try:
        import bitsandbytes as bnb
    except Exception as err:  # installed, but not importable with this torch
        raise FitError(f"8-bit AdamW: bitsandbytes does not import here: {type(err).__name__}: {_one_line(err)}") from None
    return bnb.optim.AdamW8bit(params, lr=1e-4)


def _held_by(opt) -> list[torch.Tensor]:
    """Tensors an optimizer makes when it is built, before any step (bitsandbytes' quantile
    maps): on the CPU they exist before the step and count from its start; a simulated step
    leaves them out, since they are host tensors until its step moves them, counted from there."""
    found = []
    for name, value in vars(opt).items():
        if name in ("state", "param_groups", "defaults"):
            continue
        values = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
        found.extend(v for v in values if isinstance(v, torch.Tensor))
    return found


def _ddp(par: Parallel, device: str, model, tracker):
    return parallel.ddp(model, par.world_size, tracker, on_meta=device == "meta",
                        find_unused_parameters=par.find_unused_parameters)


def _optimizer(name: str, params, foreach):
    """The torch optimizer for `name`: `foreach` (True on a CUDA target, whose meta parameters
    torch would not take for CUDA ones; None: torch's default) for the plain ones; the fused
    variants take `fused=True` and no foreach; adafactor is transformers'."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.01, foreach=foreach)
    if name == "sgd-momentum":
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, foreach=foreach)
    if name == "adam":
        return torch.optim.Adam(params, lr=1e-4, foreach=foreach)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-4, foreach=foreach)
    if name == "adam-fused":
        return torch.optim.Adam(params, lr=1e-4, fused=True)
    if name == "adamw-fused":
        return torch.optim.AdamW(params, lr=1e-4, fused=True)
    if name in names.OPTIMIZER_PACKAGES and (why := names.optimizer_available(name)):
        raise FitError(why)
    if name == "adafactor":
        return _adafactor(params)
    if name == "adamw8bit":
        return _adamw8bit(params)
    raise FitError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


def _optimizer_scope(name: str, gpu, device: str):
    """What the optimizer's step runs inside on `device` for the target (`gpu`, None: the CPU):
    - a fused variant on meta: torch's check that refuses meta parameters widened
      (`torch_compat.fused_on_meta`; the kernels have meta kernels);
    - adafactor simulated for the CPU: meta as the default device. Its state vectors are made
      as `torch.zeros(shape).to(grad)`: on the CPU one tensor (the `.to` returns it), on a CUDA
      card a host tensor and the card's copy. On meta for the CPU target the host tensor would
      be counted beside a meta copy; with meta the default device there is one, as on the CPU.
      For a CUDA target it stays as torch runs it: the host tensor is not the card's memory.
    None: nothing around it."""
    if device == "meta" and name in names.FUSED_TORCH:
        from sa_profiler import torch_compat

        return torch_compat.fused_on_meta
    if device == "meta" and name == "adafactor" and gpu is None:
        return lambda: torch.device("meta")
    return None


def _first_tensor(out):
    if isinstance(out, torch.Tensor) and out.is_floating_point():
        return out
    if isinstance(out, (tuple, list)):
        for item in out:
            if isinstance(item, torch.Tensor) and item.is_floating_point():
                return item
    if isinstance(out, dict):  # also diffusers' BaseOutput and transformers' ModelOutput
        return _first_tensor(list(out.values()))
    if hasattr(out, "__dataclass_fields__"):
        return _first_tensor([getattr(out, f) for f in out.__dataclass_fields__])
    raise FitError(f"the model returned {type(out).__name__}, not a floating-point tensor to take a loss of")


@dataclass
class StepResult:
    peak_total: int | None  # bytes at the peak, baseline included (what the card must hold)
    baseline: int
    status: str = "ok"
    message: str = ""
    breakdown: dict = field(default_factory=dict)  # category -> bytes at the peak
    modules: dict = field(default_factory=dict)  # top-level module -> bytes at the peak
    attention_bytes: int = 0  # allocated by attention layers (forward or backward) and alive at the peak
    attention_layers: int = 0  # SAGAN layers, nn.MultiheadAttention and modules that call SDPA
    sagan_layers: int = 0
    sagan_modules: list = field(default_factory=list)  # their names
    attention_calls: list = field(default_factory=list)  # per module: the SDPA backend the target runs
    explicit_attention: dict = field(default_factory=dict)  # module -> probabilities' shape, attention written out
    fused_lines: list = field(default_factory=list)  # the library switches this step was run with (fuse=True)
    backends: dict = field(default_factory=dict)  # SDPA backend -> calls in one step
    top_tensors: list[TensorInfo] = field(default_factory=list)
    timeline: list = field(default_factory=list)  # (op, allocated bytes, phase, module) per op, both steps
    peak_index: int | None = None  # the op in `timeline` that set the peak
    # the step run again with the usable memory as the allocator's cap: False where the caching
    # allocator runs out under it although the peak is below (fragmentation); None: not run so
    fits_cap: bool | None = None
    # the steady-state (second) step's estimated seconds on a GPU target (engine/timing.py:
    # StepTimer.total); None on the CPU target and when measured
    time_s: float | None = None
    time_method: str = ""
    sharded_blocks: list = field(default_factory=list)  # FSDP2: the blocks `fully_shard` wrapped (the root too)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.peak_total is not None

    # the step as an `engine.workload.Outcome`, as a layer's Record reads: what the batch search takes
    @property
    def peak_bytes(self) -> int | None:
        return None if self.peak_total is None else self.peak_total - self.baseline

    @property
    def baseline_bytes(self) -> int:
        return self.baseline


def _materialise(model: nn.Module, device) -> None:
    """Meta parameters/buffers (a model given as an instance) made real on `device` for a
    measured step: small random floats, zero integers."""
    if not any(t.is_meta for t in list(model.parameters()) + list(model.buffers())):
        return
    model.to_empty(device=device)
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.normal_(0.0, 0.02)
            else:
                t.zero_()


def _setting(on, optimizer: str | None, amp: str | None, device: str):
    """(card or None, rules' torch or None, optimizer, autocast dtype or None), checked."""
    if isinstance(on, Question):
        gpu, torch_version = on.gpu, on.torch_version
        optimizer, amp = optimizer or on.optimizer, amp or on.amp
    else:
        gpu, torch_version, optimizer = on, None, optimizer or "adam"
    if why := names.optimizer_available(optimizer):
        raise FitError(why)
    if why := names.fused_unsupported(optimizer, "cpu" if gpu is None else "cuda",
                                      torch.__version__ if gpu is None else (torch_version or torch.__version__)):
        raise FitError(why)
    if amp is not None and amp not in AMP_DTYPES:
        raise FitError(f"unknown --amp {amp!r}; expected fp16 or bf16")
    amp_dtype = AMP_DTYPES.get(amp)
    if amp_dtype is not None and gpu is None and amp_dtype != AMP_DTYPES["bf16"]:
        raise FitError("--amp emulates CUDA autocast in fp16; give a CUDA target (--gpu NAME or --gpu-mem SIZE), "
                       "or --amp bf16 for the CPU's autocast")
    if gpu is not None and amp_dtype is not None and (why := gpu.supports(amp_dtype)):
        raise FitError(why)
    if gpu is not None and device != "meta":
        raise FitError("a CUDA target is simulated (device meta); measuring runs on the CPU target only")
    return gpu, torch_version, optimizer, amp_dtype


def _model(factory, device: str, convert_to, fuse: bool):
    """The model built on `device` in training mode, its SAGAN layers (named before any
    conversion), converted or fused as asked: (model, SAGAN module names, the switch's lines)."""
    try:
        with torch.device(device):
            model = factory()
    except Exception as err:
        raise FitError(f"building the model failed: {type(err).__name__}: {_one_line(err)}") from None
    if not isinstance(model, nn.Module):
        raise FitError(f"the factory returned {type(model).__name__}, not an nn.Module")
    if device != "meta":
        _materialise(model, device)
    model.to(device).train()
    sagan = [n for n, m in model.named_modules() if is_sagan_attention(m)]
    if convert_to:
        convert(model, convert_to[0], **convert_to[1])
    fused_lines = fused.switch(model) if fuse else []
    if fuse and not fused_lines:
        raise FitError("no library switch routes this model's explicit attention through scaled_dot_product_attention")
    return model, sagan, fused_lines


SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION",
                 "math": "MATH"}


def _forced(backend: str | None):
    """`torch.nn.attention.sdpa_kernel` with one backend, as a user forces it (the routing keeps
    flags someone set); nothing for None."""
    if backend is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if backend not in SDPA_BACKENDS or not hasattr(SDPBackend, SDPA_BACKENDS[backend]):
        raise FitError(f"unknown SDPA backend {backend!r} for this torch; expected one of "
                       f"{', '.join(b for b, n in SDPA_BACKENDS.items() if hasattr(SDPBackend, n))}")
    return sdpa_kernel(getattr(SDPBackend, SDPA_BACKENDS[backend]))


def run_step(factory: Callable[[], nn.Module], input_shape, batch: int, on: Question | gpus.GPU | None, *,
             optimizer: str | None = None, amp: str | None = None, convert_to: tuple[str, dict] | None = None,
             device: str = "meta", cap: int | None = None, timeline: bool = False, fuse: bool = False,
             accumulation: int = 1, checkpointing: str | None = None, sdpa_backend: str | None = None) -> StepResult:
    """Two training steps of the model on `device` (meta: simulated; cpu: measured under the
    tracker) costed for `on`: a Question (its card, torch, optimizer and AMP), or a card alone
    (None: the CPU) under the running torch with `optimizer` (default adam) and `amp`.
    `input_shape`: the model's inputs (see `inputs.py`: a shape, a `--input` string, a list of
    them, or a dict by argument name). `accumulation`: micro-steps of forward, loss / k and
    backward on a micro-batch of `batch` per optimizer step, the gradients adding up;
    `checkpointing`: None, "all", "every-K" or "selective", the repeated blocks checkpointed
    (`blocks.apply`)."""
    gpu, torch_version, optimizer, amp_dtype = _setting(on, optimizer, amp, device)
    try:
        accumulation = names.accumulation(accumulation)
        names.checkpointing(checkpointing)
    except ValueError as err:
        raise FitError(str(err)) from None
    par = on.parallel if isinstance(on, Question) else Parallel()
    if par.strategy != "single":
        if why := parallel.unsupported(par.strategy):
            raise FitError(why)
        if par.strategy == "fsdp" and optimizer not in parallel.SHARDED_OPTIMIZERS:
            raise FitError(f"--parallel fsdp steps torch's own optimizers on the shards "
                           f"({', '.join(parallel.SHARDED_OPTIMIZERS)}); {optimizer} is not one")
    specs = parse_inputs(input_shape)
    model, sagan, fused_lines = _model(factory, device, convert_to, fuse)
    try:
        blocks.apply(model, checkpointing)
    except blocks.BlocksError as err:
        raise FitError(str(err)) from None
    try:  # values read from a file are read here, on first use: a file that cannot be is one line
        args, kwargs = model_inputs.make(specs, batch, device)
        specs_in_order = [s for s in specs if not s.name] + [s for s in specs if s.name]
        input_values = [(t, s.value(batch)) for s, t in zip(specs_in_order, [*args, *kwargs.values()])
                        if device == "meta" and s.has_values]
    except model_inputs.InputError as err:
        raise FitError(str(err)) from None
    cuda = gpu is not None
    timer = timing.StepTimer(gpu) if cuda else None  # a CUDA target is simulated (`_setting`)
    tracker = runner.tracker_for(gpu, device, cap=cap, timer=timer, host=True, first_use_workspaces=True)
    tracker.keep_peak_live = True
    if timeline:
        tracker.timeline = []
    result = StepResult(None, 0, sagan_layers=len(sagan), sagan_modules=sagan, fused_lines=fused_lines)
    with contextlib.ExitStack() as around:
        wrap = None
        if par.strategy != "single":
            around.enter_context(parallel.rank_zero(par.world_size))
        if par.strategy == "fsdp":
            around.enter_context(parallel.sharded_step(tracker, device))
            result.sharded_blocks = parallel.fsdp(model, par.world_size, reshard_after_forward=par.reshard_after_forward,
                                                  param_dtype=amp_dtype, device=device)
            amp_dtype = None  # the policy casts the parameters; no autocast around the forward
        elif par.strategy == "ddp":
            around.enter_context(parallel.host_copies(device))
            wrap = functools.partial(_ddp, par, device)
        params = [p for p in model.parameters() if p.requires_grad]
        plain = optimizer not in names.FUSED_TORCH and optimizer not in names.OPTIMIZER_PACKAGES
        scope = _optimizer_scope(optimizer, gpu, device)
        with scope() if scope is not None else contextlib.nullcontext():  # torch 2.4 checks fused devices here
            opt = _optimizer(optimizer, params, True if cuda and plain else None) if params else None
        baseline = [([*model.parameters(), *model.buffers()], "parameters"), ([*args, *kwargs.values()], "input")]
        if opt is not None and device != "meta" and (held := _held_by(opt)):
            baseline.append((held, "optimizer state"))
        step = runner.Step(model, args, kwargs, baseline=baseline,
                           loss=lambda out: _first_tensor(out).float().mean(), optimizer=opt, steps=2, amp=amp_dtype,
                           values=input_values if device == "meta" else None, accumulation=accumulation,
                           optimizer_scope=scope, wrap=wrap)
        try:  # two steps: the second is the steady state, with the optimizer state there
            with _forced(sdpa_backend):
                outcome = runner.run(lambda: step, tracker, gpu.caps(torch_version) if cuda else backends.CPU, device,
                                     attribute=True)
        except SimulatedOOM as err:
            result.status, result.message = "oom", f"out of memory (simulated): {err}"
            result.baseline = tracker.baseline
            return result
        except FitError:
            raise
        except ValueBranch as err:
            raise FitError(str(err)) from None
        except Exception as err:
            if par.strategy == "ddp" and (why := parallel.unused_parameters(err)):
                raise FitError(why) from None
            raise FitError(f"the model rejected a batch of {batch} x {model_inputs.describe(specs)}: "
                           f"{type(err).__name__}: {_one_line(err)}") from None
    attribution = outcome.attribution
    result.baseline = tracker.baseline
    result.attention_layers = attribution.layers
    result.explicit_attention = {m: list(s) for m, s in attribution.explicit.items()}
    result.attention_calls = calls_by_module(outcome.calls)
    result.backends = dict(Counter(c.backend for c in outcome.calls))
    result.peak_total = tracker.allocator.peak
    result.top_tensors = tracker.peak_tensors
    result.timeline, result.peak_index = tracker.timeline or [], tracker.peak_index
    result.breakdown, result.modules, result.attention_bytes = breakdown(tracker, outcome.grads, outcome.states)
    if timer is not None:  # the runner restarts the timer at each step: its ops are the last step's
        result.time_s, result.time_method = timer.total("train"), timing.method(gpu)
    return result
