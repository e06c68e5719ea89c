"""Will this whole model train on that GPU at that batch? One training step, simulated.

The model is built on the meta device (`with torch.device("meta")`: no real memory), then two
steady-state training steps run under the memory tracker: forward, a scalar loss, backward,
optimizer step (the real torch optimizer, so its state is created as in training; on a CUDA
target with the foreach implementation torch uses there). The peak is classified: parameters
and buffers (frozen ones and BatchNorm statistics included, as a real step holds them), input,
gradients, optimizer state, activations (kept from the forward), temporaries; and attributed
to top-level modules and to the attention layers. Every `scaled_dot_product_attention` call,
from any module, runs the kernel the target would run (`attention/routing.py`), and the
result says which backend each attention module got. Each efficient implementation is then
swapped in for the SAGAN layers (`convert`) and simulated again; each conversion is its own
row, and one that fails says why without taking the rest of the answer with it.

AMP (`amp="fp16"|"bf16"`) is emulated with CUDA autocast's casting policy (`amp.py`), on
wherever torch's own autocast state is on, checkpoint recomputation included. A GradScaler
scales the loss.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from sa_profiler import names
from sa_profiler.targets import gpus
from sa_profiler.models import inputs as model_inputs
from sa_profiler.engine.amp import DTYPES as AMP_DTYPES
from sa_profiler.question import Question, make_question
from sa_profiler.attention import backends, convert, fused, is_sagan_attention
from sa_profiler.engine import runner
from sa_profiler.engine.allocator import SimulatedOOM
from sa_profiler.engine.simulate import under_cap
from sa_profiler.engine.attribution import breakdown, calls_by_module
from sa_profiler.engine.values import ValueBranch
from sa_profiler.engine.workload import TensorInfo
from sa_profiler.models.loading import FitError, _one_line, factory_of, load, meta_copy, parse_inputs  # noqa: F401 (public here)

OPTIMIZERS = names.OPTIMIZERS
CONVERSIONS = (("sdpa", {}), ("chunked", {"chunk": 1024, "checkpoint": True}))
ENGINES = ("simulate", "measure")


# -- the step -----------------------------------------------------------------------------
def _optimizer(name: str, params, foreach):
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.01, foreach=foreach)
    if name == "sgd-momentum":
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, foreach=foreach)
    if name == "adam":
        return torch.optim.Adam(params, lr=1e-4, foreach=foreach)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-4, foreach=foreach)
    raise FitError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


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


def run_step(factory: Callable[[], nn.Module], input_shape, batch: int, on: Question | gpus.GPU | None, *,
             optimizer: str | None = None, amp: str | None = None, convert_to: tuple[str, dict] | None = None,
             device: str = "meta", cap: int | None = None, timeline: bool = False, fuse: bool = False) -> StepResult:
    """Two training steps of the model on `device` (meta: simulated; cpu: measured under the
    tracker) costed for `on`: a Question (its card, torch, optimizer and AMP), or a card alone
    (None: the CPU) under the running torch with `optimizer` (default adam) and `amp`.
    `input_shape`: the model's inputs (see `inputs.py`: a shape, a `--input` string, a list of
    them, or a dict by argument name)."""
    if isinstance(on, Question):
        gpu, torch_version = on.gpu, on.torch_version
        optimizer, amp = optimizer or on.optimizer, amp or on.amp
    else:
        gpu, torch_version, optimizer = on, None, optimizer or "adam"
    if optimizer not in OPTIMIZERS:
        raise FitError(f"unknown optimizer {optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
    if amp is not None and amp not in AMP_DTYPES:
        raise FitError(f"unknown --amp {amp!r}; expected fp16 or bf16")
    amp_dtype = AMP_DTYPES.get(amp)
    if amp_dtype is not None and gpu is None:
        raise FitError("--amp emulates CUDA autocast; give a CUDA target (--gpu NAME or --gpu-mem SIZE), not the CPU")
    if gpu is not None and amp_dtype is not None and (why := gpu.supports(amp_dtype)):
        raise FitError(why)
    if gpu is not None and device != "meta":
        raise FitError("a CUDA target is simulated (device meta); measuring runs on the CPU target only")
    specs = parse_inputs(input_shape)
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
    params = [p for p in model.parameters() if p.requires_grad]
    try:  # values read from a file are read here, on first use: a file that cannot be is one line
        args, kwargs = model_inputs.make(specs, batch, device)
        specs_in_order = [s for s in specs if not s.name] + [s for s in specs if s.name]
        input_values = [(t, s.value(batch)) for s, t in zip(specs_in_order, [*args, *kwargs.values()])
                        if device == "meta" and s.has_values]
    except model_inputs.InputError as err:
        raise FitError(str(err)) from None
    cuda = gpu is not None
    opt = _optimizer(optimizer, params, True if cuda and params else None) if params else None
    tracker = runner.tracker_for(gpu, device, cap=cap, host=True, first_use_workspaces=True)
    tracker.keep_peak_live = True
    if timeline:
        tracker.timeline = []
    step = runner.Step(model, args, kwargs, baseline=[([*model.parameters(), *model.buffers()], "parameters"),
                                                      ([*args, *kwargs.values()], "input")],
                       loss=lambda out: _first_tensor(out).float().mean(), optimizer=opt, steps=2, amp=amp_dtype,
                       values=input_values if device == "meta" else None)
    result = StepResult(None, 0, sagan_layers=len(sagan), sagan_modules=sagan, fused_lines=fused_lines)
    try:  # two steps: the second is the steady state, with the optimizer state there
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
    return result


# -- the answer ---------------------------------------------------------------------------
@dataclass(repr=False)
class FitResult:
    model: str
    input_shape: tuple[int, ...]
    batch: int
    target: str
    usable: int
    optimizer: str
    amp: str | None
    step: StepResult
    conversions: dict = field(default_factory=dict)  # impl label -> StepResult
    max_batch: int | None = None
    inputs: str = ""  # every input, as `--input` would write it
    engine: str = "simulate"
    fp32_step: StepResult | None = None  # the same step without AMP, when AMP was asked for
    question: Question | None = None  # the whole question: card, torch, headroom, optimizer, AMP, engine
    fused: StepResult | None = None  # the step with explicit attention routed through SDPA (library switch)
    fused_note: str = ""  # why there is no fused step, where explicit attention was found

    @property
    def fits(self) -> bool:
        return self.step_fits(self.step)

    @property
    def torch_version(self) -> str:
        """The torch whose rules the answer follows."""
        return self.question.torch_version if self.question else torch.__version__

    def __repr__(self) -> str:  # the short answer, in a plain Python or IPython terminal
        from sa_profiler.units import format_bytes

        s = self.step
        verdict = "fits" if self.fits else "does not fit"
        peak = f"peak {format_bytes(s.peak_total)}" if s.peak_total is not None else s.message
        parts = [f"FitResult({self.model}, batch {self.batch} on {self.target}: {peak} of "
                 f"{format_bytes(self.usable)} usable, {verdict}"]
        if self.max_batch is not None:
            parts.append(f"largest batch {self.max_batch}")
        for label, c in self.conversions.items():
            parts.append(f"{label}: {format_bytes(c.peak_total) if c.peak_total else c.status}")
        if self.fused is not None:
            parts.append(f"fused: {format_bytes(self.fused.peak_total) if self.fused.peak_total else self.fused.status}")
        return "; ".join(parts) + ")"

    def step_fits(self, s: StepResult) -> bool:
        """The one verdict every view shows: the step ran to the end with the usable memory as the
        allocator's cap (`verdict`), as the largest-batch search decides each batch."""
        return s.ok and s.peak_total <= self.usable and s.fits_cap is not False

    def to_json(self) -> dict:
        def step(s: StepResult) -> dict:
            return {"status": s.status, "message": s.message, "peak_bytes": s.peak_total, "baseline_bytes": s.baseline,
                    "fits": self.step_fits(s), "breakdown": s.breakdown, "modules": s.modules,
                    "attention_bytes": s.attention_bytes, "attention_calls": s.attention_calls,
                    "sdpa_backends": s.backends, "explicit_attention": s.explicit_attention}

        out = {"model": self.model, "input": list(self.input_shape), "inputs": self.inputs, "batch": self.batch,
               "target": self.target, "engine": self.engine, "usable_bytes": self.usable, "optimizer": self.optimizer,
               "amp": self.amp, "fits": self.fits, "max_batch": self.max_batch,
               "torch_version": self.torch_version, "question": self.question.to_json() if self.question else None,
               "attention_layers": self.step.attention_layers, "sagan_layers": self.step.sagan_layers,
               **step(self.step), "conversions": {k: step(v) for k, v in self.conversions.items()}}
        if self.fp32_step is not None:
            out["fp32"] = step(self.fp32_step)
        out["fused"] = None if self.fused is None else {**step(self.fused), "change": self.fused.fused_lines}
        if self.fused_note:
            out["fused_note"] = self.fused_note
        return out

    def _repr_html_(self) -> str:  # notebooks
        try:
            from sa_profiler.report.fit_html import fit_html_fragment
        except ImportError:
            from html import escape

            return f"<pre>{escape(str(self.to_json()))}</pre>"
        return fit_html_fragment(self)


def fit(model, input_shape, batch: int, target="t4", *, optimizer: str | None = None, amp: str | None = None,
        headroom: float | int | None = None, find_max_batch: bool = False, conversions=CONVERSIONS, name: str = "",
        engine: str | None = None, timeline: bool = True, compare_fp32: bool = False,
        torch_version: str | None = None) -> FitResult:
    """A training step of `model` at `batch` under `target`: a Question (the whole question), or a
    card (a catalogue name, "cpu" or a GPU) that `make_question` turns into one with `headroom`
    (default 10 %), `torch_version`, `optimizer` (default adam), `amp` and `engine`; given with a
    Question, these replace its own.

    `model`: an nn.Module class, a factory, a `FILE.py:NAME`/`module:NAME` string, or an
    instance (its architecture and configuration; its weights are not copied). `input_shape`:
    an int (a vector), a shape tuple, a `--input` string, a list of them (several positional
    inputs), or a dict by argument name (see `sa_profiler.models.inputs`). `engine="measure"`
    runs the step for real on this CPU under the tracker (the CPU target only). With
    `compare_fp32`, an AMP answer also carries the float32 step. `torch_version` (X.Y or X.Y.Z in
    the supported range): SDPA backends chosen as that torch would (simulation only)."""
    question = _question(target, optimizer=optimizer, amp=amp, headroom=headroom, engine=engine,
                         torch_version=torch_version)
    return _fit(model, input_shape, batch, question, find_max_batch=find_max_batch, conversions=conversions,
                name=name, timeline=timeline, compare_fp32=compare_fp32)


def _question(target, **given) -> Question:
    """`target` and the options given (not None) as one Question; one line (FitError) for a bad one."""
    from dataclasses import replace

    from sa_profiler.torch_compat import checked_torch_version

    given = {k: v for k, v in given.items() if v is not None}
    try:
        if isinstance(target, Question):
            headroom = given.pop("headroom", None)
            if "torch_version" in given:
                given["torch_version"] = checked_torch_version(given["torch_version"],
                                                               given.get("engine", target.engine))
            question = replace(target, **given)
            if headroom is not None:
                question = make_question(question.card, headroom, torch_version=question.torch_version,
                                         amp=question.amp, optimizer=question.optimizer, engine=question.engine,
                                         parallel=question.parallel)
        else:
            question = make_question(target, **given)
    except gpus.UnknownGPU as err:
        raise FitError(str(err)) from None
    except (ValueError, TypeError) as err:
        raise FitError(str(err).splitlines()[0]) from None
    if question.engine not in ENGINES:
        raise FitError(f"unknown engine {question.engine!r}; expected one of {', '.join(ENGINES)}")
    return question


def _fit(model, input_shape, batch, question: Question, *, find_max_batch, conversions, name, timeline,
         compare_fp32) -> FitResult:
    factory, default_name = factory_of(model)
    name = name or default_name
    specs = parse_inputs(input_shape)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise FitError(f"batch must be a positive integer, got {batch!r}")
    engine, gpu = question.engine, question.gpu
    if engine == "measure" and gpu is not None:
        raise FitError("--engine measure runs the step on this CPU: use it with --gpu cpu "
                       "(CUDA steps are measured by benchmarks/validate_fit_cuda.py on the card)")
    device = "cpu" if engine == "measure" else "meta"

    def step_at(**kw) -> StepResult:
        """The step with the verdict every view shows: on a GPU target it runs with the usable
        memory as the allocator's cap, as `max_batch` runs each batch (a step that runs to its
        end there is the same step as without the cap); only one that runs out is run again
        without it, for what it would need."""
        run = functools.partial(run_step, factory, specs, batch, question, device=device, timeline=timeline, **kw)
        if gpu is None:
            return run()
        capped, full = under_cap(lambda cap: run(cap=cap), question.usable)
        if full is None:
            capped.fits_cap = capped.ok
            return capped
        full.fits_cap = False
        if full.ok and full.peak_total <= question.usable:
            full.message = ("the caching allocator runs out of blocks under the usable memory although the peak is "
                            "below it (fragmentation)")
        elif full.ok:  # every view prints this reason beside the verdict: never empty
            from sa_profiler.units import format_bytes

            full.message = f"{format_bytes(full.peak_total - question.usable)} over the usable memory"
        return full

    step = step_at()
    shape = specs[0].shape if specs else ()
    result = FitResult(name, shape, batch, question.card.name, question.usable, question.optimizer, question.amp, step,
                       inputs=model_inputs.describe(specs), engine=engine, question=question)
    if compare_fp32 and question.amp:
        from dataclasses import replace

        result.fp32_step = run_step(factory, specs, batch, replace(question, amp=None), device=device,
                                    timeline=timeline)
    if step.sagan_layers:
        for impl, opts in conversions:
            label = impl + "".join(f"[{k}={v}]" for k, v in opts.items())
            try:
                result.conversions[label] = step_at(convert_to=(impl, opts))
            except FitError as err:  # one conversion that fails is a row with its reason
                result.conversions[label] = StepResult(None, step.baseline, status="error", message=str(err),
                                                       sagan_layers=step.sagan_layers)
    if set(step.explicit_attention) - set(step.sagan_modules) and engine == "simulate":
        try:  # the same step with the explicit attention fused by its library's switch
            fused_step = step_at(fuse=True)
            if why := fused.unchanged(step, fused_step):  # a switch that took and changed nothing
                raise FitError(why)
            result.fused = fused_step
        except FitError as err:
            result.fused_note = (f"{err}: call torch.nn.functional.scaled_dot_product_attention in "
                                 f"{next(iter(step.explicit_attention))} instead")
    if find_max_batch:
        result.max_batch = max_batch(factory, specs, question, device=device)
    return result


def max_batch(factory, specs, question: Question, *, device="meta") -> int:
    """The largest batch whose step fits the question's usable memory (`recommend.largest_batch`
    on the engine, each step run under the usable memory as the allocator's cap)."""
    from sa_profiler.advice.recommend import largest_batch

    def run(b: int) -> StepResult:
        return run_step(factory, specs, b, question, device=device, cap=question.usable if question.gpu else None)

    best, _ = largest_batch(run, question.usable)
    return best
