"""`plan`: the configurations that train a model at a global batch on a card, fastest first.

The user asks for a global batch B. A configuration keeps B (micro-batch x gradient
accumulation) and chooses the precision, the attention (the SAGAN conversions, the library's
fused switch, another SDPA backend forced where the model calls SDPA and the card runs it), activation checkpointing of the repeated blocks and the optimizer. Each is run on
the one step runner (`step.run_step`) with the usable memory as the allocator's cap, as `fit`
runs its step, so a configuration's verdict and peak are `fit`'s for it applied by hand.

Accumulation is simulated as it runs, every micro-step of it: the gradients of earlier
micro-batches are alive during later forwards. (Two micro-steps are not always the steady state
under the caching allocator: with four, a block split differently moved a peak by 512 KiB.)

The search: for each combination of precision, attention, checkpointing and optimizer, the
largest micro-batch that divides B and fits, bisected over the divisors (memory grows with the
micro-batch); checkpointing and other optimizers are tried only where the plain combination
needs accumulation (they buy memory with time or another algorithm), and then only at micro-batches
larger than the best found for that precision and attention (at the same micro-batch they are
slower or train something else); a combination whose smallest micro-batch does not fit even
without accumulation is not bisected; each step simulated is kept and never run twice. Ranking: samples per second among the plans that fit; within the
time model's typical error of the fastest, the plans that train the same thing come first.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

from sa_profiler import names
from sa_profiler.engine import timing
from sa_profiler.models import blocks
from sa_profiler.models.fit import CONVERSIONS as FIT_CONVERSIONS
from sa_profiler.models.loading import FitError
from sa_profiler.models.parallel import unsupported as parallel_unsupported
from sa_profiler.models.step import StepResult, optimizer_available, run_step
from sa_profiler.question import Parallel, Question

KINDS = names.PLAN_KINDS
# fit's conversions, their options as sorted pairs (a Config is hashable)
CONVERSIONS = tuple((impl, tuple(sorted(options.items()))) for impl, options in FIT_CONVERSIONS)
CHECKPOINTING = ("all", "every-2", "selective")
# optimizers that hold less state than Adam's two moments; and the fused update of the user's own
# (the same algorithm, without the foreach update's temporaries)
LEANER = ("adafactor", "sgd-momentum", "adamw8bit")
FUSED = {"adam": "adam-fused", "adamw": "adamw-fused"}


@dataclass(frozen=True)
class Config:
    micro_batch: int
    accumulation: int
    amp: str | None = None
    attention: tuple = ()  # (), ("convert", impl, options as sorted pairs), ("fuse",) or ("backend", name)
    checkpointing: str | None = None
    optimizer: str = "adam"
    strategy: str = "single"  # over the question's ranks: single, ddp or fsdp
    reshard: bool = True  # FSDP2's reshard_after_forward

    def changes(self, base: "Config") -> list[str]:
        """What this configuration changes from the user's, in words."""
        out = []
        if self.accumulation > 1:
            out.append(f"micro-batch {self.micro_batch} x {self.accumulation} accumulation steps")
        if self.amp != base.amp:
            out.append(f"AMP {self.amp}" if self.amp else "float32")
        if self.attention:
            out.append(self.code_attention())
        if self.checkpointing:
            out.append(f"checkpointing: {self.checkpointing}")
        if self.optimizer != base.optimizer:
            out.append(f"optimizer {self.optimizer}")
        if (self.strategy, self.reshard) != (base.strategy, base.reshard):
            out.append(self.code_strategy())
        return out or ["nothing: it fits as it is"]

    def code_strategy(self) -> str:
        if self.strategy == "fsdp":
            return "FSDP2" + ("" if self.reshard else ", parameters kept gathered to the backward")
        return {"ddp": "DDP", "single": "one device"}[self.strategy]

    def code_attention(self) -> str:
        if self.attention and self.attention[0] == "convert":
            opts = "".join(f", {k}={v!r}" for k, v in self.attention[2])
            return f'convert(model, "{self.attention[1]}"{opts})'
        if self.attention and self.attention[0] == "backend":
            return f"SDPA backend forced: {self.attention[1]}"
        return "the library's fused attention" if self.attention else ""


@dataclass
class Planned:
    config: Config
    step: StepResult
    time_s: float | None  # one optimizer step of the global batch
    same_training: bool
    why: list[str]  # how the training changes, or why it does not

    @property
    def peak(self) -> int:
        return self.step.peak_total

    def samples_per_second(self, batch: int) -> float | None:
        return batch / self.time_s if self.time_s else None


@dataclass
class Plan:
    model: str
    batch: int
    question: Question
    base: Config
    plans: list[Planned]  # those that fit, fastest first
    closest: Planned | None = None  # where none fits: the smallest peak found
    unavailable: list[str] = field(default_factory=list)
    simulated: int = 0  # steps simulated to answer
    block_names: list[str] = field(default_factory=list)  # the repeated blocks checkpointing wraps

    @property
    def top(self) -> Planned | None:
        return self.plans[0] if self.plans else None


def _divisors(n: int) -> list[int]:
    return sorted((d for d in range(1, n + 1) if n % d == 0), reverse=True)


class _Search:
    def __init__(self, factory, specs, batch: int, question: Question):
        """`batch`: each rank's share of the global batch, which its micro-steps split."""
        self.factory, self.specs, self.batch, self.question = factory, specs, batch, question
        self.cache: dict[tuple, StepResult] = {}

    def step(self, c: Config, cap: bool = True) -> StepResult:
        key = (c, cap)
        if key not in self.cache:
            own = self.question.parallel
            q = replace(self.question, amp=c.amp, optimizer=c.optimizer,
                        parallel=Parallel(own.world_size, c.strategy, c.reshard,
                                          own.find_unused_parameters and c.strategy == "ddp"))
            attention = c.attention
            try:
                self.cache[key] = run_step(
                    self.factory, self.specs, c.micro_batch, q, cap=self.question.usable if cap and q.gpu else None,
                    accumulation=c.accumulation, checkpointing=c.checkpointing,
                    convert_to=(attention[1], dict(attention[2])) if attention and attention[0] == "convert" else None,
                    fuse=bool(attention) and attention[0] == "fuse",
                    sdpa_backend=attention[1] if attention and attention[0] == "backend" else None)
            except (FitError, blocks.BlocksError) as err:
                self.cache[key] = StepResult(None, 0, status="error", message=str(err))
        return self.cache[key]

    def fits(self, c: Config) -> bool:
        s = self.step(c)
        return s.ok and s.peak_total <= self.question.usable

    def largest(self, c: Config, micro_batches: list[int], precheck: bool = False) -> Config | None:
        """The configuration at the largest micro-batch of `micro_batches` (descending) that fits.
        One step of the smallest micro-batch without accumulation decides whether to search at
        all (`precheck`: first; else after a first miss): accumulating only adds the gradients
        held between micro-steps, so where that does not fit, no micro-batch does."""
        lo, hi, best, checked = 0, len(micro_batches) - 1, None, False
        if precheck and micro_batches[-1] < self.batch:
            checked = True
            if not self.fits(replace(c, micro_batch=micro_batches[-1], accumulation=1)):
                return None
        while lo <= hi:  # fits(m) holds for every m below a fitting one
            mid = (lo + hi) // 2
            m = micro_batches[mid]
            trial = replace(c, micro_batch=m, accumulation=self.batch // m)
            if self.fits(trial):
                best, hi = trial, mid - 1
                continue
            lo = mid + 1
            if not checked and best is None and lo <= hi:
                checked = True
                smallest = micro_batches[-1]
                if not self.fits(replace(c, micro_batch=smallest, accumulation=1)):
                    return None
        return best


def _training(c: Config, base: Config, batch_norm: bool) -> tuple[bool, list[str]]:
    """Whether `c` trains what the user's configuration trains, and why not."""
    why = []
    if c.accumulation > 1 and batch_norm:
        why.append(f"batch-norm statistics of {c.micro_batch}, not {c.micro_batch * c.accumulation}")
    if c.amp != base.amp:
        why.append(f"{c.amp} numerics" if c.amp else "float32 numerics")
    if c.optimizer not in (base.optimizer, FUSED.get(base.optimizer)):
        why.append(f"{c.optimizer}, not {base.optimizer}")
    if c.amp and c.strategy == "fsdp" and base.strategy != "fsdp":
        why.append(f"FSDP2's policy: parameters cast to {c.amp} for the whole forward, not autocast's per-op casts")
    return not why, why or ["the same math"]


def plan(factory, specs, batch: int, question: Question, *, name: str = "", tries=KINDS) -> Plan:
    """The plans that train `batch` under `question` (its card, usable memory, AMP and optimizer
    are the user's), fastest first; `tries`: the kinds of change searched (KINDS)."""
    from torch import nn

    unknown = sorted(set(tries) - set(KINDS))
    if unknown:
        raise FitError(f"unknown kind of change {', '.join(unknown)}; expected any of {', '.join(KINDS)}")
    if not isinstance(batch, int) or batch < 1:
        raise FitError(f"batch must be a positive integer, got {batch!r}")
    world = question.parallel.world_size
    if batch % world:
        raise FitError(f"a global batch of {batch} does not split over {world} ranks: give a multiple of {world}")
    per_rank = batch // world
    search = _Search(factory, specs, per_rank, question)
    base = Config(per_rank, 1, question.amp, (), None, question.optimizer, question.parallel.strategy,
                  question.parallel.reshard_after_forward)
    first = search.step(base, cap=False)  # what the model has: SAGAN layers, explicit attention
    if first.status == "error":
        raise FitError(first.message)
    import torch

    with torch.device("meta"):
        model = factory()
    batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    block_names = [n for n, _ in blocks.repeated_blocks(model)]
    has_blocks = bool(block_names)
    micro = _divisors(per_rank) if "accumulation" in tries else [per_rank]
    amps = [question.amp]
    if "precision" in tries:  # the CPU target: its autocast in bfloat16 only
        amps += [a for a in (("fp16", "bf16") if question.gpu is not None else ("bf16",))
                 if a != question.amp and (a != "bf16" or question.gpu is None or question.card.bf16)]
    attentions = [()]
    if "attention" in tries:
        if first.sagan_layers:
            attentions += [("convert", impl, opts) for impl, opts in CONVERSIONS]
        if set(first.explicit_attention) - set(first.sagan_modules) and question.gpu is not None:
            attentions.append(("fuse",))
        if first.backends and question.gpu is not None:  # SDPA calls: each other fused backend, forced,
            # where the card runs it for these calls (a forced backend it cannot run fails every step)
            forced = [("backend", b) for b in ("flash", "efficient", "cudnn") if b not in first.backends]
            attentions += [a for a in forced if search.step(replace(base, attention=a), cap=False).status != "error"]
    ckpts = [None] + (list(CHECKPOINTING) if "checkpointing" in tries and has_blocks else [])
    unavailable = []
    optimizers = [question.optimizer]
    if "optimizer" in tries:
        fused = [FUSED[question.optimizer]] if question.optimizer in FUSED and question.gpu is not None else []
        for o in fused + list(LEANER):
            why = optimizer_available(o)
            if why:
                unavailable.append(why)
            elif o != question.optimizer:
                optimizers.append(o)
    strategies = [(base.strategy, base.reshard)]
    if "parallel" in tries and world > 1:  # over N ranks: DDP, and FSDP2 with and without resharding
        for option in (("ddp", True), ("fsdp", True), ("fsdp", False)):
            why = parallel_unsupported(option[0])
            if why:
                unavailable.append(why)
            elif option not in strategies:
                strategies.append(option)
        unavailable = list(dict.fromkeys(unavailable))
    found: list[Config] = []
    variants = [(o, ck) for o in optimizers for ck in ckpts][1:]  # the user's optimizer, no checkpointing: first
    for amp, attention, (strategy, reshard) in itertools.product(amps, attentions, strategies):
        best = search.largest(Config(per_rank, 1, amp, attention, None, optimizers[0], strategy, reshard), micro)
        found += [best] if best else []
        for optimizer, ckpt in variants:  # each buys memory with time or another algorithm: worth a row only
            larger = [m for m in micro if best is None or m > best.micro_batch]  # at a larger micro-batch
            c = search.largest(Config(per_rank, 1, amp, attention, ckpt, optimizer, strategy, reshard), larger,
                               precheck=True) if larger else None
            if c is not None:
                found.append(c)
                best = c
    plans = []
    for c in dict.fromkeys(found):
        same, why = _training(c, base, batch_norm)
        plans.append(Planned(c, search.step(c), search.step(c).time_s, same, why))
    plans = _ranked(plans, batch)
    closest = None
    if not plans:  # each precision and attention at the smallest micro-batch, with the leanest settings tried
        smallest = [Config(micro[-1], per_rank // micro[-1], a, at, ckpts[1] if len(ckpts) > 1 else None,
                           optimizers[-1], st, rs)
                    for a, at, (st, rs) in itertools.product(amps, attentions, strategies)]
        steps = [(search.step(c, cap=False), c) for c in smallest]
        ok = [(s, c) for s, c in steps if s.ok]
        if ok:
            s, c = min(ok, key=lambda sc: sc[0].peak_total)
            same, why = _training(c, base, batch_norm)
            closest = Planned(c, s, s.time_s, same, why)
    return Plan(name, batch, question, base, plans, closest, unavailable, len(search.cache), block_names)


def _ranked(plans: list[Planned], batch: int) -> list[Planned]:
    """Fastest first by samples per second; within the time model's typical error of the
    fastest, the plans that train the same thing first, then the smaller peak."""
    timed = [p for p in plans if p.time_s]
    if not timed:
        return sorted(plans, key=lambda p: (not p.same_training, p.config.accumulation, p.peak))
    fastest = min(p.time_s for p in timed)
    factor = timing.typical_factor()

    def key(p: Planned):
        tied = p.time_s is not None and p.time_s <= fastest * factor
        return (not tied, not p.same_training if tied else False, p.time_s or float("inf"), p.peak)

    return sorted(plans, key=key)
