"""Advice and catalogues rendered with rich, and as a stable JSON document."""

from __future__ import annotations

import re

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from sa_profiler.advice.advise import Advice
from sa_profiler.engine import timing
from sa_profiler.advice.recommend import Row, total_bytes
from sa_profiler.report.why import why_peak
from sa_profiler.units import format_bytes, format_seconds

JSON_VERSION = 1


# Layout: names and numbers stay whole at any width --------------------------------------------
#
# Every line and table the console prints goes through two helpers. `_say` wraps a line of
# prose only between words, never inside a name or a number, and never between a number and its
# unit. `_whole` lays a rich Table out with each name or number column as wide as its widest cell
# (free-text columns wrap between words, headers too); when that sum does not fit the width, the
# table is printed as one record per row instead (`name: value` lines). Nothing is folded, and
# nothing is cut with an ellipsis; a single word longer than the whole line is printed whole and
# left to the terminal.

NB = "\u00a0"  # joins words that must stay on one line (a name with spaces, a shape)
SOFT = "\u202f"  # joins a phrase kept on one line when it fits one, else broken at these points
_UNITS = r"B|KiB|MiB|GiB|TiB|PiB|KB|MB|GB|TB|bytes|s|ms|us|µs|ns|tokens?|images?"
# the spaces never broken: a number and its unit ("285.21 MiB", "2.09 s*", "1 image"), and the
# factors of a product of numbers ("128 x 256 x 256")
_GLUE = re.compile(rf"(?<=\d) (?=(?:{_UNITS})(?![\w/]))|(?<=\d) (?=x \d)|(?<=\d x) (?=\d)")


def _nb(s: str) -> str:
    """s as one unbreakable word (spaces are printed as spaces)."""
    return s.replace(" ", NB)


def _phrase(s: str) -> str:
    """s kept on one line where a line can hold it, else broken at its spaces."""
    return s.replace(" ", SOFT)


def _keep_names(plain: str) -> str:
    """plain with each GPU name of the catalogue as one word ("GeForce RTX 3060 12GB")."""
    from sa_profiler.targets import gpus

    names = sorted({g.name for g in gpus.CATALOGUE.values() if " " in g.name}, key=len, reverse=True)
    for name in (n for n in names if n in plain):
        plain = plain.replace(name, _nb(name))
    return plain


def _breaks(plain: str) -> tuple[list[int], list[int]]:
    """The positions a line may break at: (at any time, only inside a phrase too long for a line)."""
    probe = plain.replace(SOFT, " ")
    hard = [i for i, ch in enumerate(plain) if ch == " " and not _GLUE.match(probe, i)]
    soft = [i for i, ch in enumerate(plain) if ch == SOFT and not _GLUE.match(probe, i)]
    return hard, soft


def _spans(start: int, end: int, cuts: list[int]) -> list[tuple[int, int]]:
    """[start, end) split at the positions cuts (each dropped), empty pieces left out."""
    out, s = [], start
    for c in (c for c in cuts if start <= c < end):
        if c > s:
            out.append((s, c))
        s = c + 1
    if end > s:
        out.append((s, end))
    return out


def _longest_word(text: Text) -> int:
    """The widest piece of text no line break may split."""
    plain = text.plain
    hard, soft = _breaks(plain)
    cuts = sorted([*hard, *soft, *(i for i, ch in enumerate(plain) if ch == "\n")])
    return max((cell_len(plain[s:e]) for s, e in _spans(0, len(plain), cuts)), default=0)


def _wrap(text: Text, width: int, indent: int = 0, hang: int | None = None) -> list[Text]:
    """text as lines of at most width cells, broken only between words (see _breaks); the first
    line indented by indent, the others by hang. A word longer than a line has a line of its own."""
    hang = indent if hang is None else hang
    text = text.copy()
    text.plain = _keep_names(text.plain)  # the same length: the styles stay where they were
    plain = text.plain
    hard, soft = _breaks(plain)
    lines: list[tuple[int, int, int]] = []  # (start, end, indent)
    offset = 0
    for paragraph in plain.split("\n"):  # the lines after the first, of any paragraph, hang
        end_of = offset + len(paragraph)
        queue = _spans(offset, end_of, hard)
        cur = None
        while queue:
            s, e = queue.pop(0)
            pad = hang if lines else indent
            if cur is not None and cell_len(plain[cur[0]:e]) <= width - pad:
                cur[1] = e
                continue
            own = width - (hang if cur is not None or lines else indent)
            if cell_len(plain[s:e]) > own and any(s < c < e for c in soft):
                queue[:0] = _spans(s, e, soft)  # a phrase too long for any line: its parts flow
                continue
            if cur is not None:
                lines.append((cur[0], cur[1], pad))
            cur = [s, e]
        pad = hang if lines else indent
        lines.append((cur[0], cur[1], pad) if cur else (offset, offset, 0))
        offset = end_of + 1
    out = []
    for s, e, pad in lines:
        line = Text(" " * pad) if pad else Text()
        line.append_text(text[s:e])
        line.plain = line.plain.replace(NB, " ").replace(SOFT, " ")
        line.no_wrap, line.overflow, line.end = True, "ignore", "\n"
        out.append(line)
    return out


def _say(console: Console, markup: str, indent: int = 0, hang: int | None = None) -> None:
    """Print a line of console markup, wrapped between words only (see _wrap)."""
    text = console.render_str(markup)
    for line in _wrap(text, console.width, indent, hang):
        console.print(line, soft_wrap=True)


def _as_text(console: Console, cell, highlight: bool = False) -> Text:
    if isinstance(cell, Text):
        return cell.copy()
    if isinstance(cell, str):
        return console.render_str(cell, highlight=highlight)
    return Text(str(cell))


class _Whole:
    """A rich Table whose names and numbers stay whole at any width (see the note above)."""

    def __init__(self, table: Table, wrap=None, indent: int = 0):
        self.table, self.wrap, self.indent = table, wrap, indent

    def _kinds(self, cells) -> list[bool]:
        """Per column, whether it holds free text (wraps between words) rather than names and numbers."""
        if self.wrap is not None:
            return [str(col.header) in self.wrap for col in self.table.columns]  # a dict's keys too
        return [col.justify == "left" and any(len(_breaks(c.plain)[0]) >= 3 for c in column)
                for col, column in zip(self.table.columns, cells)]

    def _build(self, console, heads, cells, widths, kinds, padding=None) -> Table:
        t = self.table
        table = Table(box=t.box, safe_box=t.safe_box, padding=t.padding if padding is None else padding,
                      collapse_padding=t.collapse_padding,
                      pad_edge=t.pad_edge, show_header=t.show_header, show_edge=t.show_edge, show_lines=t.show_lines,
                      leading=t.leading, style=t.style, row_styles=t.row_styles, header_style=t.header_style,
                      border_style=t.border_style, highlight=t.highlight)
        for col, head, width, free in zip(t.columns, heads, widths, kinds):
            table.add_column(Text("\n").join(_wrap(head, width)), header_style=col.header_style, style=col.style,
                             justify=col.justify, vertical=col.vertical, width=width, no_wrap=True,
                             overflow="fold")  # never needed: each cell fits its column
        for i, row in enumerate(zip(*cells)):
            table.add_row(*(Text("\n").join(_wrap(c, w)) if free else c for c, w, free in zip(row, widths, kinds)),
                          style=t.rows[i].style if i < len(t.rows) else None,
                          end_section=t.rows[i].end_section if i < len(t.rows) else False)
        return table

    def __rich_console__(self, console: Console, options):
        t = self.table
        width = options.max_width
        if self.indent:
            options = options.update_width(max(width - self.indent, 1))
        if t.title:
            title = _as_text(console, t.title)
            title.stylize(t.title_style or "table.title")
            yield from _wrap(title, width)
        cols = t.columns
        heads = [_as_text(console, col.header) for col in cols]
        cells = [[_as_text(console, c, t.highlight or col.highlight) for c in col.cells] for col in cols]
        kinds = self._kinds(cells)
        widest = [max((cell_len(line) for c in column for line in c.plain.split("\n")), default=0)
                  for column in cells]
        words = [max((_longest_word(c) for c in column), default=0) for column in cells]
        head_word = [_longest_word(h) if t.show_header else 0 for h in heads]
        head_full = [h.cell_len if t.show_header else 0 for h in heads]
        # free text: a column as wide as its longest word, or as wrap asks for it (or as wide as it is)
        asked = [self.wrap.get(str(col.header), 0) if isinstance(self.wrap, dict) else 0 for col in cols]
        least = [max(min(max(full, h), max(w, a)) if free else full, hw)
                 for w, full, h, hw, a, free in zip(words, widest, head_full, head_word, asked, kinds)]

        def overhead(padding=None):  # the table's width less its columns'
            probe = self._build(console, heads, [[Text()] for _ in cols], [1] * len(cols), [False] * len(cols),
                                padding)
            return probe.__rich_measure__(console, options.update_width(1 << 16)).maximum - len(cols)

        padding = None
        spare = width - self.indent - overhead() - sum(least)
        if spare < 0:  # a column apart is one space apart before it is a line apart
            padding = (0, 0, 0, 0) if t.box is not None else (0, 1, 0, 0)
            spare = width - self.indent - overhead(padding) - sum(least)
        if spare < 0:
            yield from self._cards(heads, cells, kinds, width)
            if t.box is not None:  # the blank line a table's bottom edge leaves
                yield Text()
            return
        widths = list(least)
        for i in range(len(cols)):  # headers on one line first, then free text as wide as it asks
            if not kinds[i]:
                grow = min(spare, max(head_full[i], widest[i]) - widths[i])
                widths[i] += grow
                spare -= grow
        free = [i for i in range(len(cols)) if kinds[i]]
        while spare > 0 and free:
            free = [i for i in free if widths[i] < max(widest[i], head_full[i])]
            for i in free[:spare]:
                widths[i] += 1
                spare -= 1
        table = self._build(console, heads, cells, widths, kinds, padding)
        yield Padding(table, (0, 0, 0, self.indent)) if self.indent else table

    def _cards(self, heads, cells, kinds, width):
        """One record per row: `name: value` lines (a table without headers: its cells on one line)."""
        at = self.indent
        for row in zip(*cells):
            if not self.table.show_header:
                line = Text("  ").join(c if free else _soft_text(c) for c, free in zip(row, kinds) if c.plain)
                yield from _wrap(line, width, indent=at, hang=at + 2)
                continue
            first = True
            for head, cell, free in zip(heads, row, kinds):
                if not cell.plain.strip():
                    continue
                line = Text()
                line.append(head.plain.replace(" ", NB) + ":", style="bold")
                line.append(" ")
                line.append_text(cell if free else _soft_text(cell))
                yield from _wrap(line, width, indent=at if first else at + 2, hang=at + 4)
                first = False


def _soft_text(text: Text) -> Text:
    text = text.copy()
    text.plain = _phrase(text.plain)
    return text


def _whole(table: Table, wrap=None, indent: int = 0) -> _Whole:
    """table, to print: its names and numbers whole at any width. wrap: the headers of the columns
    that hold free text (they wrap between words), or a dict of them to the least width each is
    worth a table for (narrower, the table prints one record per row); by default, left-justified
    columns with a cell of four words or more. indent: spaces left of it."""
    return _Whole(table, wrap, indent)


_numbers_whole = _whole  # the name cli/catalogue.py imports


def _print_table(console: Console, table: Table, wrap=None, indent: int = 0) -> None:
    console.print(_whole(table, wrap, indent), crop=False)


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
    g = a.target.gpu

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
        "target": {"name": g.name, "key": a.target.key, "total_memory": g.total_memory, "context_bytes": g.context_bytes,
                   "headroom_bytes": a.target.headroom, "usable_bytes": a.target.usable,
                   "compute_capability": list(g.capability)},
        "engine": a.engine,
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
    g = a.target.gpu
    shape = _nb(f"{a.channels} x {a.height} x {a.width}") + (", " + _nb(f"batch {a.batch}") if a.batch else "")
    _say(console, f"[bold]Self-attention on {shape}[/] {_nb(f'(N = {a.tokens} tokens)')} on "
                  f"[bold]{_nb(escape(g.name))}[/]: "
                  + _phrase(f"{format_bytes(a.target.usable)} usable of {format_bytes(g.total_memory)}"))
    for note in a.skipped:
        _say(console, f"[yellow]{escape(note)}[/]")
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
        _print_table(console, table, wrap=())
        for r in (r for r in a.rows if r.mode == mode and r.status == "error"):
            _say(console, f"[yellow]error[/] {_nb(escape(r.display))} {short.get(r.dtype, r.dtype)}: "
                          f"{escape(r.message or 'no reason given')}", hang=2)
    _say(console, "[dim]1 image: peak memory of a step at batch 1 (baseline included); "
                  + ("max batch: the largest that fits; peak: at that batch" if a.batch is None else
                     f"max: the largest batch that fits; at {a.batch}: peak at the batch asked for")
                  + f"; time: per step, * estimated (typical error x{timing.typical_factor():.2f}, see below), "
                    "else measured[/]")
    for mode, rec in a.recommendations.items():
        if rec.row is None:
            _say(console, f"[bold red]{mode}:[/] {escape(rec.reason)} on this target"
                          + ("; see the alternatives below." if a.alternatives else "."), hang=2)
            continue
        r = rec.row
        batch = r.max_batch if a.batch is None else a.batch
        _say(console, f"[bold green]{_nb(f'Recommended for {mode}:')}[/] {_nb(escape(r.display))} "
                      f"({_nb(r.backend or 'bmm')}) in {r.dtype}, {_nb(f'batch {batch}:')} "
                      f"[bold]{_phrase(escape(r.code()))}[/]", hang=2)
        if rec.alternative is not None:
            alt = rec.alternative
            _say(console, f"or, if your card runs it: {_phrase(escape(alt.code()))} in {alt.dtype}, "
                          f"{_nb(f'batch {alt.max_batch}')} [dim]({escape(alt.caveat)})[/]", indent=2, hang=4)
    w = a.why
    _say(console, f"\n[bold]Why[/] (classic layer, {w['dtype']}, {w['mode']}, one image): "
                  f"{escape(why_peak(w))}. {escape(w['formula'])}.")
    tensors = Table(box=None, show_header=False, padding=(0, 1), pad_edge=False)
    for col, just in (("size", "right"), ("shape", "left"), ("dtype", "left"), ("from", "left")):
        tensors.add_column(col, justify=just)
    for t in w["top_tensors"]:
        note = escape(f" ({t['note']})") if t["note"] else ""
        tensors.add_row(format_bytes(t["bytes"]), "x".join(map(str, t["shape"])), t["dtype"],
                        _nb(f"from {escape(t['op'])}") + note)
    if w["top_tensors"]:
        _print_table(console, tensors, wrap=("from",), indent=2)
    if a.alternatives:
        _say(console, "\n[bold]Alternatives[/] (they change the model; numbers for the same target):")
        for x in a.alternatives:
            r = x.row
            peak = (format_bytes(total_bytes(r.per_image)) if r.per_image and r.per_image.status == 'ok' else '-')
            _say(console, f"- {escape(x.what)}: peak {peak} per image, largest safe batch {r.max_batch}: "
                          f"{_phrase(escape(x.code))}", indent=2, hang=4)
    _say(console, "\n[dim]" + escape("; ".join(a.assumptions)) + ".[/]")


def render_gpus(gpus, console: Console) -> None:
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False, header_style="bold")
    for col in ("key", "name", "memory", "CC", "FP32 TF", "FP16 TF", "GB/s"):
        table.add_column(col, justify="left" if col in ("key", "name") else "right", no_wrap=True)
    for g in gpus:
        table.add_row(escape(g.key), escape(g.name), format_bytes(g.total_memory, 1), f"{g.capability[0]}.{g.capability[1]}",
                      f"{g.fp32_flops / 1e12:g}", f"{g.fp16_flops / 1e12:g}",
                      f"{g.bandwidth / 1e9:g}")
    _print_table(console, table, wrap=())
    _say(console, "[dim]memory: as torch reports it (total_memory), binary units; CC: compute capability "
                  "(bfloat16 from 8.0); TF: dense peak TFLOP/s (FP16 on tensor cores where present); GB/s: memory bandwidth[/]")


def render_fit(result, console: Console) -> None:
    s = result.step
    inputs = escape(getattr(result, "inputs", "") or "x".join(map(str, result.input_shape)))
    verdict = "[bold green]fits[/]" if result.fits else "[bold red]does not fit[/]"
    amp = f", AMP {result.amp}" if result.amp else ""
    measured = " (measured on this CPU)" if getattr(result, "engine", "simulate") == "measure" else ""
    head = (f"[bold]{_nb(escape(result.model))}[/], {_nb('batch ' + str(result.batch))} x {inputs}, "
            f"{_nb(escape(result.optimizer))}{amp} on [bold]{_nb(escape(result.target))}[/]{measured}")
    if s.peak_total is None:
        _say(console, f"{head}: {verdict} ({escape(s.message)})")
    else:
        why = f" ({escape(s.message)})" if s.fits_cap is False else ""
        peak = _phrase(f"peak {format_bytes(s.peak_total)} of {format_bytes(result.usable)} usable:")
        _say(console, f"{head}: {peak} {verdict}{why}")
    if result.max_batch is not None:
        _say(console, f"Largest batch that fits: [bold]{result.max_batch}[/]")
    table = Table(title="At the peak", title_justify="left", box=box.SIMPLE_HEAD, header_style="bold")
    table.add_column("category")
    table.add_column("memory", justify="right")
    table.add_column("share", justify="right")
    total = s.peak_total or 1
    for cat, b in s.breakdown.items():
        table.add_row(escape(cat), format_bytes(b), f"{b / total:.0%}")
    _print_table(console, table, wrap=())
    if s.modules:
        mods = Table(title="Activations at the peak by top-level module", title_justify="left", box=box.SIMPLE_HEAD,
                     header_style="bold")
        mods.add_column("module")
        mods.add_column("memory", justify="right")
        for name, b in sorted(s.modules.items(), key=lambda kv: -kv[1]):
            mods.add_row(escape(name), format_bytes(b))
        _print_table(console, mods, wrap=())
    calls = getattr(s, "attention_calls", None) or []
    if calls:
        where = "this CPU" if result.target.startswith("CPU") else escape(result.target)
        att_calls = Table(title=f"scaled_dot_product_attention calls, as {where} runs them (one step)",
                          title_justify="left", box=box.SIMPLE_HEAD, header_style="bold")
        for col in ("module", "backend", "calls", "dtype", "query", "key / value", "mask"):
            att_calls.add_column(col, justify="left" if col in ("module", "backend", "dtype") else "right")
        for c in calls:
            kv = "x".join(map(str, c["key"])) + (" / " + "x".join(map(str, c["value"])) if c["value"] != c["key"] else "")
            mask = "causal" if c.get("is_causal") else ("x".join(map(str, c["mask"])) if c.get("mask") else "-")
            att_calls.add_row(escape(c["module"]), c["backend"], str(c["calls"]), c["dtype"],
                              "x".join(map(str, c["query"])), kv, mask)
        _print_table(console, att_calls, wrap=())
    if s.attention_layers:
        share = f"{s.attention_bytes / total:.0%} of it" if s.peak_total else "unknown"
        sagan = getattr(s, "sagan_layers", s.attention_layers)
        title = (f"Attention layers ({s.attention_layers}, {sagan} of them SAGAN): {format_bytes(s.attention_bytes)} "
                 f"of the peak ({share})")
        if not result.conversions:
            _say(console, f"[bold]{title}[/]")
            _render_fused(result, console)
            return
        att = Table(title=title + "; with the SAGAN layers converted, the whole step becomes",
                    title_justify="left", box=box.SIMPLE_HEAD, header_style="bold")
        for col in ("layers", "peak", "fits", "code"):
            att.add_column(col, justify="right" if col == "peak" else "left")
        att.add_row("classic (as is)", format_bytes(s.peak_total) if s.peak_total else "out of memory",
                    "yes" if result.fits else "no", "")
        for label, c in result.conversions.items():
            ok = result.step_fits(c)
            impl = label.split("[")[0]
            opts = "".join(f", {kv.split('=')[0]}={kv.split('=')[1]}" for kv in label[len(impl):].strip("[]").split("][") if kv)
            if c.status == "error":
                peak, fits = "error", escape(c.message)
            else:
                peak, fits = (format_bytes(c.peak_total) if c.peak_total else "out of memory"), ("yes" if ok else "no")
            att.add_row(escape(label), peak, fits, escape(f'convert(model, "{impl}"{opts})'))
        _print_table(console, att, wrap={"fits": 0, "code": 30})  # code in lines of 30 or more, or a record per row
        _render_fused(result, console)


def _render_fused(result, console: Console) -> None:
    """Attention written out by hand, and the same step with it fused by the library's switch."""
    explicit = {m: s for m, s in result.step.explicit_attention.items() if m not in result.step.sagan_modules}
    if not explicit:
        return
    names = list(explicit)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    _say(console, f"Attention written out by hand (matmul, softmax, matmul) in {len(names)} module"
                  f"{'s' if len(names) != 1 else ''}: {escape(shown)}", hang=2)
    f = result.fused
    if f is None:
        if result.fused_note:
            _say(console, f"{escape(result.fused_note)}", indent=2, hang=4)
        return
    if f.status == "error" or f.peak_total is None:
        _say(console, f"fused through SDPA: {escape(f.message or f.status)}", indent=2, hang=4)
        return
    verdict = "fits" if result.step_fits(f) else "does not fit"
    backends = ", ".join(f"{b} x{n}" for b, n in f.backends.items())
    via = f" ({backends})" if backends else ""  # never "()"
    _say(console, f"fused through scaled_dot_product_attention{via}: peak {format_bytes(f.peak_total)}, "
                  f"{verdict}; change: {escape('; '.join(f.fused_lines))}", indent=2, hang=4)
