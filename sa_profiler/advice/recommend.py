"""What fits on a target, the largest safe batch, and what to use.

Usable memory (documented rule): the card's memory as torch reports it, minus the CUDA context
and library handles that `max_memory_allocated` does not count (the catalogue's
`context_bytes`), minus the headroom (default 10 % of the card: measured on an H100, the
largest batch that ran was up to 10 % below the no-headroom prediction, where cuDNN
convolution workspaces that the simulator does not model took the difference;
reports/validation/max-batch-*.csv). A batch fits when the baseline (parameters, input, persistent
cuBLAS workspace) plus the step's peak over it stays within the usable memory. The largest
safe batch is searched on the engine (`largest_batch`): a first guess from batch 1 alone (memory
is close to affine in the batch), then secant guesses kept inside the bracket of a fitting and
a failing batch, with bisection where a guess does not halve it. Each simulation runs the
allocator model under the usable memory as a cap, so a batch that fragments the cache beyond
the card fails as it would on the card.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sa_profiler.targets import evidence

from sa_profiler.attention import backends
from sa_profiler.attention.registry import chunk_for, defaults, display, get  # noqa: F401 (chunk_for: public here)
from sa_profiler.engine import Record, Workload, simulate
from sa_profiler.engine.workload import Outcome
from sa_profiler.engine import timing
from sa_profiler.question import DEFAULT_HEADROOM, Question  # noqa: F401 (DEFAULT_HEADROOM: the headroom's rule is stated above)

MAX_BATCH = 1 << 20


def total_bytes(rec: Outcome) -> int:
    return (rec.baseline_bytes or 0) + (rec.peak_bytes or 0)


def bytes_per_image(rec: Record) -> int:
    """What one more image adds to a layer's step, from its record at batch 1: the peak over
    the baseline and the image itself, which the baseline holds."""
    return (rec.peak_bytes or 0) + rec.workload.image_bytes


def largest_batch(run: Callable[[int], Outcome], usable: int, seen: dict[int, Outcome] | None = None,
                  likely: Callable[[int], Outcome] | None = None,
                  per_image: Callable[[Outcome], int] | None = None,
                  hint: int | None = None) -> tuple[int, dict[int, Outcome]]:
    """The largest batch whose record is ok and fits `usable`; 0 if batch 1 does not fit.
    `seen` holds records already made (by batch), which are not run again. `likely`, if given,
    runs the first guess instead of `run` (usually the answer: a caller may time it there).
    `per_image(record at batch 1)` estimates the bytes one more image adds (default: the step's
    peak over its baseline); with it the first guess needs no second simulation. `hint`, if
    given, is the first guess instead (a batch the caller expects to be the answer, such as that
    of a step with the same bytes in another dtype); like any guess it is only run, never trusted.

    A guess comes from the secant through the two largest fitting batches (memory is close to
    affine in the batch); while only batch 1 fits, from it and the failing batch if that ran to
    the end (if not: the batch below the first failing one, once), or else from `per_image`. A
    guess is kept strictly inside the bracket of the largest fitting and the smallest failing
    batch (MAX_BATCH + 1 counts as failing); without one the step is a bisection. Until a batch
    fails, a fourth fitting step in a row at least doubles the batch. After, a guess that fits
    where it was aimed is checked by the batch after it, and any other guess that does not halve
    the bracket makes the next step a bisection, so a memory far from affine costs at most about
    twice the bisection's runs. With monotone fits the answer is the unique batch that fits
    while the next fails, whatever the order of the runs."""
    seen = dict(seen or {})

    def fits(b: int, runner: Callable[[int], Outcome] = run) -> bool:
        if b not in seen:
            seen[b] = runner(b)
        rec = seen[b]
        return rec.status == "ok" and total_bytes(rec) <= usable

    if not fits(1):
        return 0, seen
    step = max((per_image or (lambda r: r.peak_bytes or 0))(seen[1]), 1)
    lo, hi = 1, MAX_BATCH + 1
    for b in sorted(seen):  # records already made narrow the bracket
        if 1 < b <= MAX_BATCH and lo < b < hi:
            lo, hi = (b, hi) if fits(b) else (lo, b)

    def guess() -> int | None:
        """Where the bytes reach `usable`, from what is known; None: nothing to go on."""
        known = sorted(b for b in seen if b <= lo and fits(b))
        b1, t1 = known[-1], total_bytes(seen[known[-1]])
        if len(known) >= 2:  # the secant through the two largest fitting batches
            b0 = known[-2]
            slope = (t1 - total_bytes(seen[b0])) / (b1 - b0)
        elif hi <= MAX_BATCH:  # through the failing batch, if it ran to the end
            if seen[hi].status != "ok":  # else, once, the batch below it: a first guess is rarely far
                return None if len(seen) > 2 else hi - 1
            slope = (total_bytes(seen[hi]) - t1) / (hi - b1)
        else:
            slope = step
        return hi - 1 if slope <= 0 else b1 + int((usable - t1) // slope)

    bisect, climbs = False, 0
    pending = hint if hint is not None and lo < hint < hi else None
    while hi - lo > 1:
        g = pending if pending is not None else None if bisect else guess()
        b = (lo + hi) // 2 if g is None else min(max(g, lo + 1), hi - 1)
        if hi > MAX_BATCH and climbs >= 3:  # nothing has failed yet and the guesses keep falling short
            b = max(b, min(2 * lo, MAX_BATCH))
        # the likely answers run on `likely`: a guess inside the bracket, and the last batch left below it
        answer = b == g or b == hi - 1
        width = hi - lo
        ok = fits(b, (likely or run) if answer else run)
        if ok:
            lo, climbs = b, climbs + 1
        else:
            hi = b
        # after the hint, the hint again: moved into the bracket, it is its neighbour on the side
        # the answer lies (the hint is usually the answer)
        pending = hint if pending is not None and b == hint else None
        # a guess that fits where it was aimed is checked by the batch after it; any other guess
        # that does not halve the bracket makes the next step a bisection
        bisect = hi <= MAX_BATCH and g is not None and hi - lo > width // 2 and not (ok and b == g)
    return lo, seen


@dataclass
class Row:
    """One implementation x dtype x mode on a target."""

    impl: str
    options: dict
    dtype: str
    mode: str
    status: str = "ok"  # ok, unsupported, error
    message: str = ""
    backend: str = ""
    per_image: Record | None = None  # the step at batch 1
    at_batch: Record | None = None  # the step at `batch`
    batch: int = 0  # largest safe batch, or the requested batch
    max_batch: int = 0
    fits: bool = False
    source: str = "simulated"
    evidence: str = ""  # measured / source / assumption (evidence.py)
    caveat: str = ""

    @property
    def label(self) -> str:
        return Workload(self.impl, 1, 1, 1, 1, self.dtype, self.mode, "cpu", self.options).label

    @property
    def display(self) -> str:
        """A short name for tables (the registry's)."""
        return display(self.impl, self.options)

    @property
    def exact(self) -> bool:
        return get(self.impl).exact

    @property
    def peak_at_batch(self) -> int | None:
        """The peak (baseline included) at the row's batch where the step fits there; None where
        it does not: every view shows "out of memory" for such a row, never a peak."""
        return total_bytes(self.at_batch) if self.fits and self.at_batch is not None else None

    @property
    def time_source(self) -> str:
        """"measured" or "estimated" (the time model of engine/timing.py), "" without a time."""
        rec = self.at_batch or self.per_image
        if rec is None or rec.time_s is None:
            return ""
        return "measured" if rec.source == "measured" else "estimated"

    @property
    def time_per_image(self) -> float | None:
        rec = self.at_batch or self.per_image
        if rec is None or rec.time_s is None:
            return None
        return rec.time_s / max(rec.workload.batch, 1)

    def code(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f'convert(model, "{self.impl}"{opts})'


def candidates(question: Question, dtype: str, mode: str, channels: int, impls: list[str] | None,
               tokens: int = 1) -> list[tuple[str, dict]]:
    """Implementations worth a row: the classic layer, SDPA as torch would pick it, each other
    SDPA backend the card can run for these head sizes, and chunked attention (checkpointed
    in training, where keeping every chunk would cost N x N again)."""
    out: list[tuple[str, dict]] = []
    wanted = impls or ["reference", "sdpa", "chunked"]
    caps = question.caps()
    dt = Workload("reference", 1, 1, 1, 1, dtype).torch_dtype
    qk = max(channels // 8, 1)
    train = mode == "train"
    for spec in wanted:
        name, _, backend = spec.partition(":")
        if name == "sdpa":
            auto = backends.select(caps, dt, qk, channels, train)
            if not backend:
                out.append(("sdpa", {}))
                for b in ("flash", "efficient", "cudnn"):
                    if b == auto:
                        continue
                    split_ok = channels % qk == 0
                    d_qk, d_v = (qk, qk) if (b == "flash" and split_ok) else (qk, channels)
                    if backends.unsupported_reason(b, caps, dt, d_qk, d_v, train) is None:
                        out.append(("sdpa", {"backend": b}))
            else:
                out.append(("sdpa", {"backend": backend}))
        else:
            out.append((name, defaults(name, tokens, mode)))
    unique: list[tuple[str, dict]] = []  # `sdpa` already lists `sdpa:flash`: one row each
    for c in out:
        if c not in unique:
            unique.append(c)
    return unique


def profile_row(question: Question, impl: str, options: dict, dtype: str, mode: str, channels: int, height: int,
                width: int, batch: int | None, engine: Callable[[Workload], Record] = simulate,
                hint: int | None = None) -> Row:
    """`hint`: a likely largest batch, tried first (largest_batch)."""
    row = Row(impl, options, dtype, mode)

    def run(b: int, timing: bool = False) -> Record:
        w = Workload(impl, b, channels, height, width, dtype, mode, question.key, options)
        if engine is simulate:  # the allocator model runs out where the card would, fragmentation included
            return simulate(w, question, timing=timing or b == 1, cap=question.usable if b > 1 else None)
        return engine(w)

    first = run(1)
    row.per_image = first
    row.backend = first.backend
    row.source = first.source
    row.evidence, row.caveat = evidence.of(row, question.gpu)
    if first.status != "ok":
        row.status, row.message = first.status, first.message
        return row
    # the first guess is usually the answer: timed there, its time needs no second simulation below
    # (the cap changes no op of a step that fits, so the time is the uncapped one)
    row.max_batch, seen = largest_batch(run, question.usable, {1: first}, likely=lambda b: run(b, timing=batch is None),
                                        per_image=bytes_per_image, hint=hint)
    row.batch = row.max_batch if batch is None else batch
    at = (seen.get(row.batch) or run(row.batch)) if row.batch else first
    if at.time_s is None and first.time_s is not None and at is not first and engine is simulate:
        # the batch search runs without the time model; launch costs do not scale with the batch
        timed = simulate(Workload(impl, row.batch, channels, height, width, dtype, mode, question.key, options),
                         question)
        at.time_s, at.time_method = timed.time_s, timed.time_method
    row.at_batch = at
    row.fits = row.batch > 0 and at.status == "ok" and total_bytes(at) <= question.usable
    return row


@dataclass
class Recommendation:
    row: Row | None
    mode: str
    reason: str
    alternative: Row | None = None  # a forced backend that would rank first but rests on an assumption


class NoAnswer(ValueError):
    """A question with no computable answer: the rows that could decide it failed."""


def recommend(rows: list[Row], mode: str, batch: int | None) -> Recommendation:
    """`_rank` over the rows whose evidence allows recommending them: a forced backend whose
    availability or memory on the target is an assumption (evidence.py) is not recommended;
    when it would have ranked first it is named as the alternative, with its caveat."""
    sure = [r for r in rows if not evidence.unsure_forced(r)]
    # where a forced backend is set aside, "no exact implementation fits" would deny its own row
    rec = _rank(sure, mode, batch, "exact implementation" if len(sure) == len(rows)
                else "exact implementation known to run on this card")
    first = _rank(rows, mode, batch).row
    if first is not None and evidence.unsure_forced(first):
        rec.alternative = first
        rec.reason += (f"; {first.display} ({first.backend}) would rank first, but is not forced here: "
                       f"{first.caveat}")
    failed = [r for r in rows if r.mode == mode and r.status == "error"]
    if failed and rec.row is None:  # "nothing fits" is not an answer when rows could not be computed
        raise NoAnswer(f"no answer for {mode}: {len(failed)} of {sum(r.mode == mode for r in rows)} rows could not be "
                       f"computed and none of the others fits; first: {failed[0].display} {failed[0].dtype}: "
                       f"{failed[0].message or 'no reason given'}")
    if failed:
        rec.reason += "; not compared (could not be computed): " + ", ".join(f"{r.display} {r.dtype}" for r in failed)
    return rec


def _rank(rows: list[Row], mode: str, batch: int | None, which: str = "exact implementation") -> Recommendation:
    """The exact implementation that fits with the least time per image. Estimated times
    within the time model's typical error of the fastest (`timing.typical_factor`, from its
    held-out check) count as tied, and a tie goes to the row with more memory headroom (the
    smaller peak at the batch compared: one image when no batch is asked for), then to the
    larger batch and the wider dtype."""
    pool = [r for r in rows if r.mode == mode and r.status == "ok" and r.fits and r.exact]
    if not pool:
        if batch is not None:  # the batch asked for is the question: say how far each could go
            best = max((r for r in rows if r.mode == mode and r.status == "ok" and r.exact and r.max_batch),
                       key=lambda r: r.max_batch, default=None)
            if best is not None:
                return Recommendation(None, mode, f"no {which} fits batch {batch}; the largest that fits "
                                                  f"is {best.max_batch}, with {best.display} in {best.dtype}")
        return Recommendation(None, mode, f"no {which} fits even one image")
    order = {"float32": 0, "bfloat16": 1, "float16": 2, "float64": 3}
    timed = [r for r in pool if r.time_per_image is not None]
    if not timed:
        best = min(pool, key=lambda r: (-r.max_batch, order.get(r.dtype, 9)))
        return Recommendation(best, mode, "fits with the headroom (no time known) and takes the largest batch")
    fastest = min(timed, key=lambda r: r.time_per_image)
    factor = timing.typical_factor() if fastest.time_source == "estimated" else 1.0
    tied = [r for r in timed if r.time_per_image <= fastest.time_per_image * factor]

    def memory(r: Row) -> int:
        return total_bytes(r.at_batch if batch is not None and r.at_batch else r.per_image)

    best = min(tied, key=lambda r: (memory(r), -r.max_batch, order.get(r.dtype, 9), r.time_per_image))
    if len(tied) == 1:
        reason = f"fits with the headroom and is the fastest per image among those that fit ({fastest.time_source})"
    else:
        others = ", ".join(f"{r.display} {r.dtype}" for r in tied if r is not best)
        reason = (f"fits with the headroom; its estimated time per image is within the estimate's typical error "
                  f"(x{factor:.2f}) of the fastest, as is that of {others}, and it needs the least memory of these")
    return Recommendation(best, mode, reason)


@dataclass
class Alternative:
    what: str
    code: str
    row: Row


def alternatives(question: Question, channels: int, height: int, width: int, dtype: str, mode: str,
                 engine=simulate) -> list[Alternative]:
    """Changes to the model with their own numbers, for when nothing exact fits."""
    out = []
    best_exact = "sdpa"
    for factor in (2, 4):
        if height % factor or width % factor:
            continue
        h, w = height // factor, width // factor
        row = profile_row(question, best_exact, {}, dtype, mode, channels, h, w, None, engine)
        out.append(Alternative(
            f"attention at 1/{factor} resolution ({h} x {w}): pool before the layer, upsample after",
            f"F.interpolate(attn(F.avg_pool2d(x, {factor}))[0], scale_factor={factor})", row))
    for pool in (2, 4):
        if height % pool or width % pool:
            continue
        row = profile_row(question, "pooled", {"pool": pool}, dtype, mode, channels, height, width, None, engine)
        out.append(Alternative(f"keys/values max-pooled {pool}x{pool} (as in BigGAN)", row.code(), row))
    return out
