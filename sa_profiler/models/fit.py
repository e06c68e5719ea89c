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

AMP (`amp="fp16"|"bf16"`) is emulated with CUDA autocast's casting policy (`amp.py`; on the
CPU target `amp="bf16"` with CPU autocast's), on
wherever torch's own autocast state is on, checkpoint recomputation included. A GradScaler
scales the loss.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field

import torch

from sa_profiler import names
from sa_profiler.targets import gpus
from sa_profiler.models import inputs as model_inputs
from sa_profiler.question import Parallel, Question, make_question
from sa_profiler.attention import fused
from sa_profiler.engine import timing
from sa_profiler.engine.simulate import under_cap
from sa_profiler.models.loading import FitError, _one_line, factory_of, load, meta_copy, parse_inputs  # noqa: F401 (public here)
from sa_profiler.models.step import OPTIMIZERS, StepResult, run_step  # noqa: F401 (public here)

CONVERSIONS = (("sdpa", {}), ("chunked", {"chunk": 1024, "checkpoint": True}))
ENGINES = ("simulate", "measure")


# -- the answer ---------------------------------------------------------------------------
@dataclass(repr=False)
class FitResult:
    model: str
    input_shape: tuple[int, ...]
    batch: int
    card: str  # the card's name ("target" in the JSON)
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
    accumulation: int = 1  # micro-steps of `batch` per optimizer step (gradient accumulation)
    checkpointing: str | None = None  # the repeated blocks checkpointed: None, all, every-K or selective
    sdpa_backend: str | None = None  # one SDPA backend forced (`sdpa_kernel`), or torch's choice

    @property
    def fits(self) -> bool:
        return self.step_fits(self.step)

    @property
    def parallel(self) -> Parallel:
        """The ranks and strategy the step was simulated for (one device: `single`)."""
        return self.question.parallel if self.question else Parallel()

    @property
    def global_batch(self) -> int:
        """Samples per optimizer step over every rank: the batch per rank, its micro-steps, the ranks."""
        return self.batch * self.accumulation * self.parallel.world_size

    @property
    def ranks(self) -> str:
        """The per-rank line every view prints ("" on one device)."""
        from sa_profiler.models import parallel

        return "" if self.parallel.strategy == "single" else parallel.describe(self.parallel, self.batch,
                                                                               self.accumulation)

    @property
    def assumptions(self) -> list[str]:
        """What the simulated rank does not see, with figures ([] on one device)."""
        from sa_profiler.models import parallel

        if self.parallel.strategy == "single":
            return []
        return parallel.assumptions(self.parallel, cuda=bool(self.question and self.question.gpu))

    @property
    def torch_version(self) -> str:
        """The torch whose rules the answer follows."""
        return self.question.torch_version if self.question else torch.__version__

    def __repr__(self) -> str:  # the short answer, in a plain Python or IPython terminal
        from sa_profiler.units import format_bytes

        s = self.step
        verdict = "fits" if self.fits else "does not fit"
        peak = f"peak {format_bytes(s.peak_total)}" if s.peak_total is not None else s.message
        parts = [f"FitResult({self.model}, batch {self.batch} on {self.card}: {peak} of "
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

    def samples_per_second(self, s: StepResult) -> float | None:
        """The samples of one optimizer step (the batch times its accumulation micro-steps) over
        the step's estimated time (`StepResult.time_s`, all its micro-steps); None without one."""
        return self.batch * self.accumulation / s.time_s if s.time_s else None

    @property
    def time_model(self) -> str:
        """The time model's assumption (`timing.assumption`), where the answer has estimated times."""
        steps = [self.step, *self.conversions.values(), self.fp32_step, self.fused]
        timed = any(s is not None and s.time_s is not None for s in steps)
        return timing.assumption(self.question.gpu) if timed and self.question and self.question.gpu else ""

    def to_json(self) -> dict:
        def step(s: StepResult) -> dict:
            return {"status": s.status, "message": s.message, "peak_bytes": s.peak_total, "baseline_bytes": s.baseline,
                    "fits": self.step_fits(s), "breakdown": s.breakdown, "modules": s.modules,
                    "attention_bytes": s.attention_bytes, "attention_calls": s.attention_calls,
                    "sdpa_backends": s.backends, "explicit_attention": s.explicit_attention,
                    "time_s": s.time_s, "samples_per_second": self.samples_per_second(s)}

        out = {"model": self.model, "input": list(self.input_shape), "inputs": self.inputs, "batch": self.batch,
               "target": self.card, "engine": self.engine, "usable_bytes": self.usable, "optimizer": self.optimizer,
               "amp": self.amp, "fits": self.fits, "max_batch": self.max_batch,
               "torch_version": self.torch_version, "question": self.question.to_json() if self.question else None,
               "accumulation": self.accumulation, "checkpointing": self.checkpointing,
               "sdpa_backend": self.sdpa_backend, "parallel": asdict(self.parallel), "global_batch": self.global_batch,
               "ranks": self.ranks or None, "assumptions": self.assumptions,
               "attention_layers": self.step.attention_layers, "sagan_layers": self.step.sagan_layers,
               **step(self.step), "conversions": {k: step(v) for k, v in self.conversions.items()},
               # the times are estimates (engine/timing.py), for the steady-state step: its typical error and model
               "time_error_factor": timing.typical_factor() if self.time_model else None,
               "time_model": self.time_model or None}
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
        torch_version: str | None = None, accumulation: int = 1, checkpointing: str | None = None,
        sdpa_backend: str | None = None, world_size: int | None = None, parallel: str | None = None,
        reshard_after_forward: bool | None = None, find_unused_parameters: bool | None = None) -> FitResult:
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
    the supported range): SDPA backends chosen as that torch would (simulation only).
    `accumulation`: each optimizer step runs that many micro-steps of `batch` (forward, loss / k,
    backward; gradient accumulation); `checkpointing`: the repeated blocks run under activation
    checkpointing: None, "all", "every-K" or "selective" (`sa_profiler.models.blocks`). Every
    step run for the answer, the largest-batch search's included, runs with both. `sdpa_backend`
    (flash, efficient, cudnn or math): every step runs with that backend forced, as
    `torch.nn.attention.sdpa_kernel` forces it. `world_size` and `parallel` ("ddp" or "fsdp";
    `reshard_after_forward` for FSDP2, default True; `find_unused_parameters` for DDP, default
    False): one rank of a data-parallel job, `batch` per rank (`models/parallel.py`); given with
    a Question, they replace its own."""
    setting = _parallel(target, world_size, parallel, reshard_after_forward, find_unused_parameters)
    question = _question(target, optimizer=optimizer, amp=amp, headroom=headroom, engine=engine,
                         torch_version=torch_version, parallel=setting)
    try:
        training = {"accumulation": names.accumulation(accumulation), "checkpointing": checkpointing,
                    "sdpa_backend": sdpa_backend}
        names.checkpointing(checkpointing)
    except ValueError as err:
        raise FitError(str(err)) from None
    return _fit(model, input_shape, batch, question, find_max_batch=find_max_batch, conversions=conversions,
                name=name, timeline=timeline, compare_fp32=compare_fp32, training=training)


def _parallel(target, world_size, strategy, reshard, unused=None) -> Parallel | None:
    """The parallel setting the options give (None: none given, the question's own stands);
    one line (FitError) for a bad one."""
    if world_size is None and strategy is None and reshard is None and unused is None:
        return None
    own = target.parallel if isinstance(target, Question) else Parallel()
    if world_size is not None and strategy is None and own.strategy == "single" and world_size != 1:
        raise FitError(f"--world-size {world_size} needs --parallel ddp or --parallel fsdp")
    if strategy is not None and world_size is None and own.strategy == "single":
        raise FitError(f"--parallel {strategy} needs --world-size N (the number of ranks)")
    strategy = strategy or own.strategy
    if reshard is not None and strategy != "fsdp":
        raise FitError("--reshard-after-forward is FSDP2's: give it with --parallel fsdp")
    try:
        return Parallel(own.world_size if world_size is None else world_size, strategy,
                        own.reshard_after_forward if reshard is None else reshard,
                        own.find_unused_parameters if unused is None else unused)
    except ValueError as err:
        raise FitError(str(err)) from None


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
         compare_fp32, training: dict) -> FitResult:
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
        run = functools.partial(run_step, factory, specs, batch, question, device=device, timeline=timeline,
                                **training, **kw)
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
                       inputs=model_inputs.describe(specs), engine=engine, question=question, **training)
    if compare_fp32 and question.amp:
        from dataclasses import replace

        result.fp32_step = run_step(factory, specs, batch, replace(question, amp=None), device=device,
                                    timeline=timeline, **training)
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
        result.max_batch = max_batch(factory, specs, question, device=device, **training)
    return result


def max_batch(factory, specs, question: Question, *, device="meta", accumulation: int = 1,
              checkpointing: str | None = None, sdpa_backend: str | None = None) -> int:
    """The largest batch whose step fits the question's usable memory (`recommend.largest_batch`
    on the engine, each step run under the usable memory as the allocator's cap); with
    `accumulation` and `checkpointing` as `run_step` takes them (the batch is the micro-batch)."""
    from sa_profiler.advice.recommend import largest_batch

    def run(b: int) -> StepResult:
        return run_step(factory, specs, b, question, device=device, cap=question.usable if question.gpu else None,
                        accumulation=accumulation, checkpointing=checkpointing, sdpa_backend=sdpa_backend)

    best, _ = largest_batch(run, question.usable)
    return best
