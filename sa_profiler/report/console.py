"""Advice and catalogues rendered with rich, and as a stable JSON document."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from sa_profiler.advice.advise import Advice
from sa_profiler.engine import timing
from sa_profiler.advice.recommend import Row, total_bytes
from sa_profiler.report.layout import nb, phrase, print_table, say
from sa_profiler.report.why import why_peak
from sa_profiler.units import format_bytes, format_seconds

JSON_VERSION = 1


def _row_json(r: Row) -> dict:
    per = r.per_image
    at = r.at_batch
    return {
        "impl": r.impl, "options": r.options, "label": r.label, "backend": r.backend, "dtype": r.dtype,
        "mode": r.mode, "status": r.status, "message": r.message, "exact": r.exact,
        "peak_bytes_per_image": total_bytes(per) if per and per.status == "ok" else None,
        "batch": r.batch, "max_batch": r.max_batch,
        "peak_bytes_at_batch": r.peak_at_batch,
        "time_s": at.time_s if at else None, "time_method": at.time_method if at else "",
        "time_source": r.time_source,
        "time_error_factor": timing.typical_factor() if r.time_source == "estimated" else None,
        "fits": r.fits, "source": r.source, "evidence": r.evidence, "caveat": r.caveat,
    }


def advice_json(a: Advice) -> dict:
    g = a.question.card

    def rec(r):
        if r.row is None:
            return {"impl": None, "dtype": None, "mode": r.mode, "batch": 0, "code": None, "reason": r.reason}
        alt = r.alternative
        return {"impl": r.row.impl, "options": r.row.options, "backend": r.row.backend, "dtype": r.row.dtype,
                "mode": r.mode, "batch": r.row.max_batch if a.batch is None else a.batch, "code": r.row.code(),
                "reason": r.reason, "evidence": r.row.evidence,
                "alternative": alt and {"code": alt.code(), "backend": alt.backend, "dtype": alt.dtype,
                                        "batch": alt.max_batch, "evidence": alt.evidence, "caveat": alt.caveat}}

    return {
        "version": JSON_VERSION,
        "shape": {"channels": a.channels, "height": a.height, "width": a.width, "tokens": a.tokens, "batch": a.batch},
        "target": {"name": g.name, "key": a.question.key, "total_memory": g.total_memory, "context_bytes": g.context_bytes,
                   "headroom_bytes": a.question.headroom, "usable_bytes": a.question.usable,
                   "compute_capability": list(g.capability)},
        "engine": a.engine,
        "question": a.question.to_json(),  # whole: the card, the torch whose rules apply, the headroom
        "assumptions": a.assumptions,
        "skipped": a.skipped,
        "rows": [_row_json(r) for r in a.rows],
        "recommendation": rec(a.recommendation),
        "recommendations": {m: rec(r) for m, r in a.recommendations.items()},
        "why": a.why,
        "alternatives": [{"what": x.what, "code": x.code, **_row_json(x.row)} for x in a.alternatives],
    }


def _time_cell(r: Row) -> str:
    """A step's time; `*` marks an estimate."""
    t = r.at_batch.time_s if r.at_batch else None
    return format_seconds(t) + ("*" if r.time_source == "estimated" else "") if t is not None else "-"


def _at_batch_cell(r: Row) -> str:
    """The peak at the batch asked for, as the JSON's peak_bytes_at_batch: a number only where
    the step fits there."""
    if r.at_batch is None:
        return "-"
    if r.peak_at_batch is not None:
        return format_bytes(r.peak_at_batch, 1)
    return r.at_batch.status if r.at_batch.status not in ("ok", "oom") else "out of memory"


def render_advice(a: Advice, console: Console) -> None:
    g = a.question.card
    shape = nb(f"{a.channels} x {a.height} x {a.width}") + (", " + nb(f"batch {a.batch}") if a.batch else "")
    say(console, f"[bold]Self-attention on {shape}[/] {nb(f'(N = {a.tokens} tokens)')} on "
                  f"[bold]{nb(escape(g.name))}[/]: "
                  + phrase(f"{format_bytes(a.question.usable)} usable of {format_bytes(g.total_memory)}"))
    for note in a.skipped:
        say(console, f"[yellow]{escape(note)}[/]")
    short = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}
    for mode in dict.fromkeys(r.mode for r in a.rows):
        title = "Inference (forward, no_grad)" if mode == "forward" else "Training (forward + backward)"
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False, header_style="bold")
        for col, just in (("impl", "left"), ("backend", "left"), ("dtype", "left"), ("1 image", "right"),
                          ("max batch" if a.batch is None else "max", "right"),
                          ("peak" if a.batch is None else f"at {a.batch}", "right"),
                          ("time", "right"), ("fits", "center")):
            table.add_column(col, justify=just, no_wrap=True)
        for r in (r for r in a.rows if r.mode == mode):
            if r.status != "ok":
                table.add_row(escape(r.display), "-", short.get(r.dtype, r.dtype), "-", "-", "-", "-", Text(r.status, style="yellow"))
                continue
            at = r.at_batch
            table.add_row(
                escape(r.display), r.backend or ("bmm+ckpt" if r.options.get("checkpoint") else "bmm"), short.get(r.dtype, r.dtype), format_bytes(total_bytes(r.per_image), 1),
                str(r.max_batch), _at_batch_cell(r) if r.batch else "-",
                _time_cell(r) if at and at.status == "ok" and r.batch else "-",
                Text("yes", style="green") if r.fits else Text("no", style="red"),
            )
        print_table(console, table, wrap=())
        for r in (r for r in a.rows if r.mode == mode and r.status == "error"):
            say(console, f"[yellow]error[/] {nb(escape(r.display))} {short.get(r.dtype, r.dtype)}: "
                          f"{escape(r.message or 'no reason given')}", hang=2)
    say(console, "[dim]1 image: peak memory of a step at batch 1 (baseline included); "
                  + ("max batch: the largest that fits; peak: at that batch" if a.batch is None else
                     f"max: the largest batch that fits; at {a.batch}: peak at the batch asked for")
                  + f"; time: per step, * estimated (typical error x{timing.typical_factor():.2f}, see below), "
                    "else measured[/]")
    for mode, rec in a.recommendations.items():
        if rec.row is None:
            say(console, f"[bold red]{mode}:[/] {escape(rec.reason)} on this target"
                          + ("; see the alternatives below." if a.alternatives else "."), hang=2)
            continue
        r = rec.row
        batch = r.max_batch if a.batch is None else a.batch
        say(console, f"[bold green]{nb(f'Recommended for {mode}:')}[/] {nb(escape(r.display))} "
                      f"({nb(r.backend or 'bmm')}) in {r.dtype}, {nb(f'batch {batch}:')} "
                      f"[bold]{phrase(escape(r.code()))}[/]", hang=2)
        if rec.alternative is not None:
            alt = rec.alternative
            say(console, f"or, if your card runs it: {phrase(escape(alt.code()))} in {alt.dtype}, "
                          f"{nb(f'batch {alt.max_batch}')} [dim]({escape(alt.caveat)})[/]", indent=2, hang=4)
    w = a.why
    say(console, f"\n[bold]Why[/] (classic layer, {w['dtype']}, {w['mode']}, one image): "
                  f"{escape(why_peak(w))}. {escape(w['formula'])}.")
    tensors = Table(box=None, show_header=False, padding=(0, 1), pad_edge=False)
    for col, just in (("size", "right"), ("shape", "left"), ("dtype", "left"), ("from", "left")):
        tensors.add_column(col, justify=just)
    for t in w["top_tensors"]:
        note = escape(f" ({t['note']})") if t["note"] else ""
        tensors.add_row(format_bytes(t["bytes"]), "x".join(map(str, t["shape"])), t["dtype"],
                        nb(f"from {escape(t['op'])}") + note)
    if w["top_tensors"]:
        print_table(console, tensors, wrap=("from",), indent=2)
    if a.alternatives:
        say(console, "\n[bold]Alternatives[/] (they change the model; numbers for the same target):")
        for x in a.alternatives:
            r = x.row
            peak = (format_bytes(total_bytes(r.per_image)) if r.per_image and r.per_image.status == 'ok' else '-')
            say(console, f"- {escape(x.what)}: peak {peak} per image, largest safe batch {r.max_batch}: "
                          f"{phrase(escape(x.code))}", indent=2, hang=4)
    say(console, "\n[dim]" + escape("; ".join(a.assumptions)) + ".[/]")


def render_gpus(gpus, console: Console) -> None:
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False, header_style="bold")
    for col in ("key", "name", "memory", "CC", "FP32 TF", "FP16 TF", "GB/s"):
        table.add_column(col, justify="left" if col in ("key", "name") else "right", no_wrap=True)
    for g in gpus:
        table.add_row(escape(g.key), escape(g.name), format_bytes(g.total_memory, 1), f"{g.capability[0]}.{g.capability[1]}",
                      f"{g.fp32_flops / 1e12:g}", f"{g.fp16_flops / 1e12:g}",
                      f"{g.bandwidth / 1e9:g}")
    print_table(console, table, wrap=())
    say(console, "[dim]memory: as torch reports it (total_memory), binary units; CC: compute capability "
                  "(bfloat16 from 8.0); TF: dense peak TFLOP/s (FP16 on tensor cores where present); GB/s: memory bandwidth[/]")


def render_fit(result, console: Console) -> None:
    s = result.step
    inputs = escape(getattr(result, "inputs", "") or "x".join(map(str, result.input_shape)))
    verdict = "[bold green]fits[/]" if result.fits else "[bold red]does not fit[/]"
    amp = f", AMP {result.amp}" if result.amp else ""
    measured = " (measured on this CPU)" if getattr(result, "engine", "simulate") == "measure" else ""
    accumulation, checkpointing = getattr(result, "accumulation", 1), getattr(result, "checkpointing", None)
    forced = getattr(result, "sdpa_backend", None)
    training = (f", {nb(f'accumulation {accumulation}')}" if accumulation > 1 else "") + (
        f", {nb('checkpointing ' + escape(checkpointing))}" if checkpointing else "") + (
        f", {nb('SDPA ' + escape(forced) + ' forced')}" if forced else "")
    head = (f"[bold]{nb(escape(result.model))}[/], {nb('batch ' + str(result.batch))} x {inputs}, "
            f"{nb(escape(result.optimizer))}{amp}{training} on [bold]{nb(escape(result.card))}[/]{measured}")
    if s.peak_total is None:
        say(console, f"{head}: {verdict} ({escape(s.message)})")
    else:
        why = f" ({escape(s.message)})" if s.fits_cap is False else ""
        peak = phrase(f"peak {format_bytes(s.peak_total)} of {format_bytes(result.usable)} usable:")
        say(console, f"{head}: {peak} {verdict}{why}")
    if getattr(result, "ranks", ""):
        say(console, escape(result.ranks))
    if s.time_s is not None:
        say(console, f"Time per step: {_fit_time(result, s)} (estimated, typical error x{timing.typical_factor():.2f}; "
                      "the steady-state step: forward, backward, optimizer)")
    if result.max_batch is not None:
        per_rank = " per rank" if getattr(result, "ranks", "") else ""
        say(console, f"Largest batch that fits{per_rank}: [bold]{result.max_batch}[/]")
    table = Table(title="At the peak", title_justify="left", box=box.SIMPLE_HEAD, header_style="bold")
    table.add_column("category")
    table.add_column("memory", justify="right")
    table.add_column("share", justify="right")
    total = s.peak_total or 1
    for cat, b in s.breakdown.items():
        table.add_row(escape(cat), format_bytes(b), f"{b / total:.0%}")
    print_table(console, table, wrap=())
    for line in getattr(result, "assumptions", []):
        say(console, f"[dim]{escape(line)}[/]")
    if s.modules:
        mods = Table(title="Activations at the peak by top-level module", title_justify="left", box=box.SIMPLE_HEAD,
                     header_style="bold")
        mods.add_column("module")
        mods.add_column("memory", justify="right")
        for name, b in sorted(s.modules.items(), key=lambda kv: -kv[1]):
            mods.add_row(escape(name), format_bytes(b))
        print_table(console, mods, wrap=())
    calls = getattr(s, "attention_calls", None) or []
    if calls:
        where = "this CPU" if result.card.startswith("CPU") else escape(result.card)
        att_calls = Table(title=f"scaled_dot_product_attention calls, as {where} runs them (one step)",
                          title_justify="left", box=box.SIMPLE_HEAD, header_style="bold")
        for col in ("module", "backend", "calls", "dtype", "query", "key / value", "mask"):
            att_calls.add_column(col, justify="left" if col in ("module", "backend", "dtype") else "right")
        for c in calls:
            kv = "x".join(map(str, c["key"])) + (" / " + "x".join(map(str, c["value"])) if c["value"] != c["key"] else "")
            mask = "causal" if c.get("is_causal") else ("x".join(map(str, c["mask"])) if c.get("mask") else "-")
            att_calls.add_row(escape(c["module"]), c["backend"], str(c["calls"]), c["dtype"],
                              "x".join(map(str, c["query"])), kv, mask)
        print_table(console, att_calls, wrap=())
    if s.attention_layers:
        share = f"{s.attention_bytes / total:.0%} of it" if s.peak_total else "unknown"
        sagan = getattr(s, "sagan_layers", s.attention_layers)
        title = (f"Attention layers ({s.attention_layers}, {sagan} of them SAGAN): {format_bytes(s.attention_bytes)} "
                 f"of the peak ({share})")
        if not result.conversions:
            say(console, f"[bold]{title}[/]")
            _render_fused(result, console)
            return
        att = Table(title=title + "; with the SAGAN layers converted, the whole step becomes",
                    title_justify="left", box=box.SIMPLE_HEAD, header_style="bold")
        timed = any(c.time_s is not None for c in [s, *result.conversions.values()])
        for col in ("layers", "peak", "time / step", "fits", "code") if timed else ("layers", "peak", "fits", "code"):
            att.add_column(col, justify="right" if col in ("peak", "time / step") else "left")
        time_cell = (lambda c: [format_seconds(c.time_s)]) if timed else (lambda c: [])
        att.add_row("classic (as is)", format_bytes(s.peak_total) if s.peak_total else "out of memory",
                    *time_cell(s), "yes" if result.fits else "no", "")
        for label, c in result.conversions.items():
            ok = result.step_fits(c)
            impl = label.split("[")[0]
            opts = "".join(f", {kv.split('=')[0]}={kv.split('=')[1]}" for kv in label[len(impl):].strip("[]").split("][") if kv)
            if c.status == "error":
                peak, fits = "error", escape(c.message)
            else:
                peak, fits = (format_bytes(c.peak_total) if c.peak_total else "out of memory"), ("yes" if ok else "no")
            att.add_row(escape(label), peak, *time_cell(c), fits, escape(f'convert(model, "{impl}"{opts})'))
        print_table(console, att, wrap={"fits": 0, "code": 30})  # code in lines of 30 or more, or a record per row
        _render_fused(result, console)


def _render_fused(result, console: Console) -> None:
    """Attention written out by hand, and the same step with it fused by the library's switch."""
    explicit = {m: s for m, s in result.step.explicit_attention.items() if m not in result.step.sagan_modules}
    if not explicit:
        return
    names = list(explicit)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    say(console, f"Attention written out by hand (matmul, softmax, matmul) in {len(names)} module"
                  f"{'s' if len(names) != 1 else ''}: {escape(shown)}", hang=2)
    f = result.fused
    if f is None:
        if result.fused_note:
            say(console, f"{escape(result.fused_note)}", indent=2, hang=4)
        return
    if f.status == "error" or f.peak_total is None:
        say(console, f"fused through SDPA: {escape(f.message or f.status)}", indent=2, hang=4)
        return
    verdict = "fits" if result.step_fits(f) else "does not fit"
    backends = ", ".join(f"{b} x{n}" for b, n in f.backends.items())
    via = f" ({backends})" if backends else ""  # never "()"
    time = f", {_fit_time(result, f)} (estimated)" if f.time_s is not None else ""
    say(console, f"fused through scaled_dot_product_attention{via}: peak {format_bytes(f.peak_total)}{time}, "
                  f"{verdict}; change: {escape('; '.join(f.fused_lines))}", indent=2, hang=4)


def _fit_time(result, s) -> str:
    """A fit step's estimated time and samples per second, as its JSON has them."""
    sps = result.samples_per_second(s)
    return f"{format_seconds(s.time_s)}, {sps:,.1f} samples/s" if sps is not None else format_seconds(s.time_s)
