"""The headline question, answered as data: for a shape on a target, every implementation x
dtype x mode, what fits, the recommendation, why, and alternatives. Rendering is elsewhere."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sa_profiler.engine import Workload, measure, simulate, timing
from sa_profiler.engine.workload import dtype_name
from sa_profiler.advice.recommend import (Alternative, Recommendation, Row, alternatives, candidates, profile_row,
                                          recommend, total_bytes)
from sa_profiler.question import Question, make_question
from sa_profiler.units import format_bytes

DEFAULT_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(repr=False)
class Advice:
    question: Question
    channels: int
    height: int
    width: int
    batch: int | None
    engine: str
    rows: list[Row]
    skipped: list[str]
    recommendations: dict[str, Recommendation]
    why: dict
    alternatives: list[Alternative] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.height * self.width

    def __repr__(self) -> str:  # the short answer, in a plain Python or IPython terminal
        recs = []
        for mode, rec in self.recommendations.items():
            if rec.row is None:
                recs.append(f"{mode}: {rec.reason}")
            else:
                batch = rec.row.max_batch if self.batch is None else self.batch
                recs.append(f"{mode}: {rec.row.code()} in {rec.row.dtype}, batch {batch}")
        return (f"Advice({self.channels}x{self.height}x{self.width} on {self.question.card.name}, "
                f"{len(self.rows)} rows; " + "; ".join(recs) + ")")

    def _repr_html_(self) -> str:  # a notebook shows the answer as a page
        from sa_profiler.report.advice_html import fragment

        return fragment(self)

    @property
    def recommendation(self) -> Recommendation:
        return self.recommendations.get("train") or next(iter(self.recommendations.values()))

    @property
    def assumptions(self) -> list[str]:
        g, q = self.question.card, self.question
        out = [
            f"usable memory = {format_bytes(g.total_memory)} (card, as torch reports it) - "
            f"{format_bytes(g.context_bytes)} (CUDA context, not counted by max_memory_allocated) - "
            f"{format_bytes(q.headroom)} (headroom) = {format_bytes(q.usable)}",
            "memory sizes are binary: 1 GiB = 2^30 bytes",
            "a step is one attention layer: forward under no_grad, or forward + backward of a scalar loss "
            "with the input and parameters requiring grad; parameters, input and the cuBLAS workspace are the baseline",
            "the whole layer runs in the row's dtype (model.half() style), not autocast",
            timing.assumption(g) if self.engine == "simulate" else
            "times are measured with CUDA events (median); a time marked * is estimated: " + timing.assumption(g),
        ]
        out.append(f"SDPA backends chosen as torch {q.torch_release} chooses them "
                   "(sdp_utils.cpp; the rules that changed from 2.4 to 2.14 are read from TORCH_RULES in attention/backends.py)")
        if any(r.backend == "cudnn" for r in self.rows):
            out.append("cuDNN attention's engines are closed source: its memory is the rule measured on an H100 "
                       "(torch 2.11, cuDNN 9.19), assumed on other architectures")
        if g.assumed:
            out.insert(0, f"a target given by memory size alone: assumed {g.assumed}")
        return out


def _why(question: Question, channels: int, height: int, width: int, dtype: str, mode: str, rows: list[Row]) -> dict:
    """The tensors at the classic layer's peak for one image, and the formula."""
    n = height * width
    known = [r.per_image for r in rows if r.impl == "reference" and r.dtype == dtype and r.mode == mode and r.per_image]
    rec = known[0] if known else simulate(Workload("reference", 1, channels, height, width, dtype, mode, question.key),
                                                          question)
    item = torch.empty((), dtype=Workload("reference", 1, 1, 1, 1, dtype).torch_dtype).element_size()
    matrix = n * n * item
    return {
        "dtype": dtype, "mode": mode, "tokens": n, "matrix_bytes": matrix,
        "peak_bytes": rec.peak_bytes,  # above the baseline: what the layer's step adds
        "baseline_bytes": rec.baseline_bytes or 0,  # parameters, input, library workspaces
        "total_bytes": total_bytes(rec),  # the two together: the rows' "1 image" figure
        "formula": f"N = H x W = {height} x {width} = {n}; one N x N matrix = N^2 x {item} B = {format_bytes(matrix)}; "
                   f"forward holds the energy Q^T K and its softmax: 2 x B x N^2 x {item} B"
                   + ("; training adds the gradient of the attention and, on CUDA, two more inside the "
                      "softmax backward kernel: 5 x B x N^2" if mode == "train" else ""),
        "top_tensors": [t.__dict__ for t in rec.top_tensors[:6]],
    }


def advise(question: Question | object, channels: int, height: int, width: int, *, batch: int | None = None,
           dtypes: list[str] | None = None, modes: tuple[str, ...] = ("forward", "train"),
           impls: list[str] | None = None, progress=None, torch_version: str | None = None,
           engine: str | None = None) -> Advice:
    """The headline answer under `question` (a Question, or a card: a GPU or a catalogue name,
    which `make_question` turns into one with the default headroom). `torch_version` and `engine`,
    where given, replace the question's (a convenience: the answer is the question's)."""
    if not isinstance(question, Question):
        question = make_question(question, torch_version=torch_version, engine=engine or "simulate")
    elif torch_version is not None or engine is not None:
        from dataclasses import replace

        from sa_profiler.torch_compat import checked_torch_version

        engine = engine or question.engine
        version = checked_torch_version(torch_version, engine) or question.torch_version
        question = replace(question, torch_version=version, engine=engine)
    skipped = []
    chosen = []
    for d in dtypes or DEFAULT_DTYPES:
        name = dtype_name(d)
        why_not = question.card.supports(Workload("reference", 1, 1, 1, 1, name).torch_dtype)
        if why_not:
            if dtypes:  # asked for explicitly
                raise ValueError(f"{name} cannot run on this target: {why_not}")
            skipped.append(f"{name} skipped: {why_not}")
            continue
        chosen.append(name)
    rows = []
    found: dict[tuple, int] = {}  # largest batches by step and element size: a dtype of the same size
    for dtype in chosen:          # (bfloat16 after float16) usually has the same bytes, so the same batch
        size = Workload("reference", 1, 1, 1, 1, dtype).torch_dtype.itemsize
        for mode in modes:
            for impl, opts in candidates(question, dtype, mode, channels, impls, height * width):
                same = (impl, tuple(sorted(opts.items())), mode, size)
                rows.append(profile_row(question, impl, opts, dtype, mode, channels, height, width, batch,
                                        hint=found.get(same)))
                found.setdefault(same, rows[-1].max_batch)
                if question.engine == "measure":
                    _confirm(rows[-1], question, channels, height, width)
                if progress:
                    progress()
    recs = {m: recommend(rows, m, batch) for m in modes}
    why_dtype = chosen[0] if chosen else "float32"
    advice = Advice(question, channels, height, width, batch, question.engine, rows, skipped, recs,
                    _why(question, channels, height, width, why_dtype, "train" if "train" in modes else "forward",
                         rows))
    if any(r.row is None for r in recs.values()) and chosen:
        mode = next(m for m, r in recs.items() if r.row is None)
        advice.alternatives = alternatives(question, channels, height, width,
                                           chosen[-1] if len(chosen) > 1 else chosen[0], mode)
    return advice


def _confirm(row: Row, question: Question, channels: int, height: int, width: int) -> None:
    """On the local card: run the predicted batch for real; step down by halving on an OOM."""
    if row.status != "ok" or row.batch < 1:
        return
    b = row.batch
    while b >= 1:
        rec = measure(Workload(row.impl, b, channels, height, width, row.dtype, row.mode, question.key, row.options),
                      repeats=3)
        if rec.status == "error":  # the kernel refused the batch: report it, do not guess
            row.status, row.message, row.source, row.fits = "error", rec.message, "measured", False
            return
        if rec.status == "ok" and total_bytes(rec) <= question.usable:
            row.at_batch, row.source = rec, "measured"
            row.fits = True
            if row.batch == row.max_batch:
                row.max_batch = b
            row.batch = b
            return
        b //= 2
    row.fits, row.source = False, "measured"
