"""The headline answer (`sa-profile --shape ... --html FILE`, `Advice` in a notebook) as HTML.

The recommendation per mode with the line of code to change, the usable memory and how it was
derived, each implementation's peak for one image against the usable memory and its largest
batch (small multiples by mode), the table the console prints, why the classic layer runs out
(the N x N tensors at its peak) and the alternatives that change the model."""

from __future__ import annotations

from pathlib import Path

from sa_profiler.advice.recommend import total_bytes
from sa_profiler.report.why import why_peak
from sa_profiler.units import format_bytes, format_seconds
from sa_profiler.report import page
from sa_profiler.report.page import esc

MODE_TITLE = {"forward": "Inference (forward, no_grad)", "train": "Training (forward + backward)"}


def _name(r) -> str:
    return f"{r.display} · {r.dtype}"


def _figures(a) -> list[dict]:
    modes = list(dict.fromkeys(r.mode for r in a.rows))
    ok = [r for r in a.rows if r.status == "ok" and r.per_image is not None and r.per_image.peak_bytes is not None]
    if not ok:
        return []
    impls = list(dict.fromkeys(r.display for r in a.rows))
    colours = {k: page.PALETTE[i % len(page.PALETTE)] for i, k in enumerate(impls)}
    usable = a.question.usable
    figs = []
    for what in ("memory", "batch"):
        axes, layout = page.facet_layout(["one image" if what == "memory" else "largest batch"], modes, gap=0.22)
        data, shapes, notes = [], [], []
        for (row_name, mode), (xa, ya) in axes.items():
            rows = [r for r in ok if r.mode == mode]
            names = [esc(_name(r)) for r in rows]
            if what == "memory":
                xs = [total_bytes(r.per_image) for r in rows]
                text = [esc(format_bytes(x)) for x in xs]
            else:
                xs = [r.max_batch if r.max_batch > 0 else None for r in rows]
                text = [str(r.max_batch) if r.max_batch else "does not fit" for r in rows]
            data.append({"type": "bar", "orientation": "h", "x": xs, "y": names, "xaxis": xa, "yaxis": ya,
                         "marker": {"color": [colours[r.display] for r in rows]}, "text": text,
                         "textposition": "auto", "hovertemplate": "%{y}: %{text}<extra></extra>", "showlegend": False})
            if what == "memory":
                shapes.append({"type": "line", "xref": xa, "yref": f"{ya} domain", "x0": usable, "x1": usable,
                               "y0": 0, "y1": 1, "line": {"color": "#b3261e", "width": 2}})
                notes.append({"text": f"usable {esc(format_bytes(usable))}", "xref": xa, "yref": f"{ya} domain",
                              "x": _log10(usable), "y": 1, "xanchor": "left", "yanchor": "bottom",
                              "showarrow": False, "font": {"color": "#b3261e", "size": 11}})
        values = [total_bytes(r.per_image) for r in ok]
        for name in list(layout):
            if name.startswith("xaxis"):
                layout[name].update(page.bytes_axis(min(values + [usable]), max(values + [usable]))
                                    if what == "memory" else {"type": "log", "dtick": 1})
            if name.startswith("yaxis"):
                layout[name].update({"automargin": True, "autorange": "reversed"})
        layout["annotations"] = layout["annotations"] + notes
        layout["shapes"] = shapes
        title = ("Peak memory of one image (baseline included) against the usable memory" if what == "memory" else
                 "Largest batch that fits (the engine's search under the usable memory)")
        height = 120 + 26 * max(len([r for r in ok if r.mode == m]) for m in modes)
        figs.append(page.fig(data, {**layout, "title": {"text": esc(title), "x": 0.01, "xanchor": "left"},
                                    "margin": {"l": 170, "r": 40, "t": 80, "b": 40}}, height=max(height, 260)))
    return figs


def _log10(v: float) -> float:
    import math

    return math.log10(v)


def _answers(a) -> str:
    g = a.question.card
    out = []
    for mode, rec in a.recommendations.items():
        title = f"{MODE_TITLE.get(mode, mode)}"
        if rec.row is None:
            out.append(f"<div class='answer none'><h3>{esc(title)}</h3><div class='rec'><b>{esc(rec.reason)}</b> on "
                       f"{esc(g.name)}; see the alternatives below.</div></div>")
            continue
        r = rec.row
        batch = r.max_batch if a.batch is None else a.batch
        at = r.at_batch
        bits = []
        if r.peak_at_batch is not None:
            bits.append(f"peak {esc(format_bytes(r.peak_at_batch))} of {esc(format_bytes(a.question.usable))}")
        elif at is not None:
            bits.append(f"out of memory at batch {batch}, usable {esc(format_bytes(a.question.usable))}")
        if r.time_per_image:
            kind = "estimate" if a.engine == "simulate" else "measured"
            bits.append(f"{esc(format_seconds(r.time_per_image))} per image ({kind})")
        out.append(f"<div class='answer'><h3>{esc(title)}</h3><div class='rec'><span class='what'>Recommended: "
                   f"<b>{esc(r.display)}</b> ({esc(r.backend or 'bmm')}) in <b>{esc(r.dtype)}</b>, batch "
                   f"<b>{batch}</b></span> — {', '.join(bits)}<br>change: <code class='code'>{esc(r.code())}</code>"
                   f"</div><div class='muted'>{esc(rec.reason)}.</div></div>")
    return "".join(out)


def _peak_cell(r) -> str:
    return format_bytes(r.peak_at_batch) if r.peak_at_batch is not None else "out of memory"


def _table(a) -> str:
    head = ("<tr><th class='s'>mode</th><th class='s'>implementation</th><th class='s'>backend</th><th class='s'>"
            "dtype</th><th>1 image</th><th>max batch</th><th>peak there</th><th>time / step</th><th>time / image</th>"
            "<th class='s'>fits</th><th class='s'>source</th></tr>")
    body = []
    for r in a.rows:
        if r.status != "ok":
            body.append(f"<tr><td class='s'>{esc(r.mode)}</td><td class='s'>{esc(r.display)}</td><td class='s'>-</td>"
                        f"<td class='s'>{esc(r.dtype)}</td><td>-</td><td>-</td><td>-</td><td>-</td><td>-</td>"
                        f"<td class='s'>{esc(r.status)}</td><td class='s' title='{esc(r.message)}'>"
                        f"{esc(r.message.splitlines()[0] if r.message else '')}</td></tr>")
            continue
        at = r.at_batch
        body.append(
            f"<tr><td class='s'>{esc(r.mode)}</td><td class='s'>{esc(r.display)}</td>"
            f"<td class='s'>{esc(r.backend or ('bmm+ckpt' if r.options.get('checkpoint') else 'bmm'))}</td>"
            f"<td class='s'>{esc(r.dtype)}</td><td>{esc(format_bytes(total_bytes(r.per_image)))}</td>"
            f"<td>{r.max_batch}</td><td>{esc(_peak_cell(r)) if at and r.batch else '-'}</td>"
            f"<td>{esc(format_seconds(at.time_s)) if at and r.batch else '-'}</td>"
            f"<td>{esc(format_seconds(r.time_per_image)) if r.time_per_image else '-'}</td>"
            f"<td class='s'>{'yes' if r.fits else 'no'}</td><td class='s'>{esc(r.source)}</td></tr>")
    return f"<table id='advice-rows'><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def _why(a) -> str:
    w = a.why
    rows = "".join(f"<tr><td>{esc(format_bytes(t['bytes']))}</td><td class='s'>{esc('x'.join(map(str, t['shape'])))}"
                   f"</td><td class='s'>{esc(t['dtype'])}</td><td class='s'>{esc(t['op'])}"
                   f"{(' (' + esc(t['note']) + ')') if t.get('note') else ''}</td></tr>" for t in w["top_tensors"])
    return (f"<h2>Why the classic layer runs out</h2><p>Classic layer, {esc(w['dtype'])}, {esc(w['mode'])}, one image: "
            f"{esc(why_peak(w))}. {esc(w['formula'])}.</p>"
            "<table><thead><tr><th>bytes</th><th class='s'>shape</th><th class='s'>dtype</th><th class='s'>made by</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>")


def _alternatives(a) -> str:
    if not a.alternatives:
        return ""
    rows = []
    for x in a.alternatives:
        r = x.row
        peak = (format_bytes(total_bytes(r.per_image)) if r.per_image is not None and r.per_image.status == "ok"
                else "-")
        rows.append(f"<tr><td class='s'>{esc(x.what)}</td><td>{esc(peak)}</td><td>{r.max_batch}</td>"
                    f"<td class='s'><code>{esc(x.code)}</code></td></tr>")
    return ("<h2>Alternatives (they change the model)</h2><table><thead><tr><th class='s'>change</th><th>1 image</th>"
            "<th>largest batch</th><th class='s'>code</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def title(a) -> str:
    return (f"Self-attention on {a.channels} x {a.height} x {a.width} (N = {a.tokens} tokens) on {a.question.card.name}: "
            "what to use")


def body(a, prefix: str, n_figures: int, command: str = "") -> str:
    divs = "\n".join(f'<div id="{prefix}{i}" class="plot"></div>' for i in range(n_figures))
    derivation = a.assumptions
    usable = next((x for x in derivation if x.startswith("usable memory")), "")
    skipped = "".join(f"<div class='note'>{esc(s)}</div>" for s in a.skipped)
    cmd = f"<h2>Command</h2><pre>{esc(command)}</pre>" if command else ""
    return (f"<h1>{esc(title(a))}</h1><p class='sub'>{esc(format_bytes(a.question.usable))} usable of "
            f"{esc(format_bytes(a.question.card.total_memory))}; engine {esc(a.engine)}. Memory sizes are binary "
            f"(1 GiB = 2^30 bytes).</p>{skipped}<section id='answer'><h2>The answer</h2>{_answers(a)}"
            f"<div class='derive'>{esc(usable)}.</div></section>"
            f"<h2>Every implementation</h2>{divs}{_table(a)}{_why(a)}{_alternatives(a)}"
            "<h2>Assumptions</h2><ul>" + "".join(f"<li>{esc(x)}</li>" for x in derivation) + f"</ul>{cmd}")


def render(a, command: str = "") -> str:
    figs = _figures(a)
    return page.document(title(a), body(a, "fig", len(figs), command), figs)


def fragment(a) -> str:
    """For `Advice._repr_html_`."""
    figs = _figures(a)
    return page.fragment(lambda prefix: body(a, prefix, len(figs)), figs)


def write_html(a, out: str | Path, command: str = "") -> Path:
    return page.write(out, render(a, command))
