"""`sa-profile fit ... --html FILE`: a whole model's simulated training step as a page.

The memory timeline of the step (allocated bytes after each op against the op index, both
steps, the forward / backward / optimizer phases banded, the peak marked; the float32 step
overlaid on an AMP one when both were computed), the tensors alive at the peak (shape, dtype,
the op that made them, the module running then), the peak by category and by top-level module,
the attention layers' share, and each conversion of the SAGAN layers side by side (its
timeline, its breakdown, the line of code). Built from the simulation alone: no GPU is needed.
"""

from __future__ import annotations

from pathlib import Path

from sa_profiler.units import format_bytes
from sa_profiler.report import page
from sa_profiler.report.page import esc

PHASE_COLOURS = {"baseline": "rgba(120,120,120,0.10)", "forward": "rgba(31,119,180,0.10)",
                 "backward": "rgba(255,127,14,0.12)", "optimizer": "rgba(44,160,44,0.12)"}
CATEGORY_COLOURS = {"parameters": "#1f77b4", "input": "#17becf", "gradients": "#9467bd", "optimizer state": "#2ca02c",
                    "activations": "#ff7f0e", "temporary": "#d62728"}
MAX_POINTS = 6000


def _variants(result) -> list[tuple[str, object]]:
    """(name, StepResult): the step as asked, its float32 twin, each conversion."""
    amp = f" (AMP {result.amp})" if result.amp else ""
    out = [(f"as is{amp}", result.step)]
    fp32 = getattr(result, "fp32_step", None)
    if fp32 is not None:
        out.append(("as is (float32)", fp32))
    out += [(f"converted: {label}{amp}", s) for label, s in result.conversions.items()]
    return out


def _code(label: str) -> str:
    impl, _, rest = label.partition("[")
    opts = "".join(f", {kv.split('=', 1)[0]}={kv.split('=', 1)[1]}" for kv in ("[" + rest).strip("[]").split("][")
                   if "=" in kv)
    return f'convert(model, "{impl}"{opts})'


def _ok(s) -> bool:
    return s.status == "ok" and s.peak_total is not None


def _thin(points: list) -> list[int]:
    """Indices to plot: every op, or for long steps the highest op of each bucket (peaks stay)."""
    n = len(points)
    if n <= MAX_POINTS:
        return list(range(n))
    size = -(-n // (MAX_POINTS // 2))
    keep = []
    for start in range(0, n, size):
        chunk = range(start, min(start + size, n))
        keep.append(max(chunk, key=lambda i: points[i][1]))
    return keep


def _phase_runs(timeline: list) -> list[tuple[str, int, int]]:
    runs = []
    for i, item in enumerate(timeline):
        phase = item[2] or "other"
        if runs and runs[-1][0] == phase:
            runs[-1][2] = i
        else:
            runs.append([phase, i, i])
    return [tuple(r) for r in runs]


def _aligned_x(timeline: list, main: list, idx: list[int]) -> list[float]:
    """x positions on `main`'s op axis for ops `idx` of another step's `timeline` (the float32
    twin of an AMP step runs other ops): phase by phase, each of its phases stretched over the
    same phase of `main`; proportionally over the whole step where the phases do not pair up."""
    runs, main_runs = _phase_runs(timeline), _phase_runs(main)
    if [r[0] for r in runs] != [r[0] for r in main_runs]:
        scale = (len(main) - 1) / max(len(timeline) - 1, 1)
        return [i * scale for i in idx]
    out = []
    for i in idx:
        k = next(k for k, (_, a, b) in enumerate(runs) if a <= i <= b)
        _, a, b = runs[k]
        _, c, d = main_runs[k]
        out.append(c + (i - a) * (d - c) / max(b - a, 1))
    return out


def timeline_figure(result) -> dict | None:
    main = result.step
    timeline = getattr(main, "timeline", None) or []
    if not timeline:
        return None
    lines = [(name, s) for name, s in _variants(result)[:2] if getattr(s, "timeline", None)]
    data, shapes, notes = [], [], []
    colours = ["#1f77b4", "#7f7f7f"]
    top = 0
    for (name, s), colour in zip(lines, colours):
        idx = _thin(s.timeline)
        ys = [s.timeline[i][1] for i in idx]
        top = max(top, max(ys))
        # the overlay on the main step's op axis, phase against phase; its hover names its own op
        xs = idx if s is main else _aligned_x(s.timeline, timeline, idx)
        data.append({"type": "scatter", "mode": "lines", "x": xs, "y": ys, "name": esc(name),
                     "line": {"color": colour, "width": 1.5, "shape": "hv"},
                     "text": [esc(f"op {i}: {s.timeline[i][0]} · {s.timeline[i][2]} · {s.timeline[i][3] or '(top level)'}")
                              for i in idx],
                     "hovertemplate": "%{text}<br>%{customdata}<extra></extra>",
                     "customdata": [esc(format_bytes(y)) for y in ys]})
        if s.peak_index is not None and s.peak_index < len(s.timeline):
            op, _, phase, module = s.timeline[s.peak_index]
            peak = s.peak_total if s.peak_total is not None else s.timeline[s.peak_index][1]
            px = s.peak_index if s is main else _aligned_x(s.timeline, timeline, [s.peak_index])[0]
            data.append({"type": "scatter", "mode": "markers", "x": [px], "y": [peak],
                         "name": esc(f"peak of {name}"), "showlegend": False,
                         "marker": {"color": "#b3261e", "size": 11, "symbol": "star"},
                         "hovertemplate": esc(f"peak {format_bytes(peak)}: {op} ({phase}, {module or 'top level'})")
                                          + "<extra></extra>"})
            if s is main:
                notes.append({"x": s.peak_index, "y": peak, "xref": "x", "yref": "y",
                              "text": esc(f"peak {format_bytes(peak)}: {op} in {module or 'top level'} ({phase})"),
                              "showarrow": True, "arrowhead": 2, "ax": -150, "ay": 25, "xanchor": "right",
                              "font": {"color": "#b3261e", "size": 12}, "bgcolor": "rgba(255,255,255,0.85)"})
    step2 = None
    for phase, a, b in _phase_runs(timeline):
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": a - 0.5, "x1": b + 0.5, "y0": 0, "y1": 1,
                       "fillcolor": PHASE_COLOURS.get(phase, "rgba(0,0,0,0.04)"), "line": {"width": 0},
                       "layer": "below"})
        if b - a > len(timeline) * 0.04:
            notes.append({"x": (a + b) / 2, "y": 1, "xref": "x", "yref": "paper", "yanchor": "bottom",
                          "text": esc(phase), "showarrow": False, "font": {"size": 11, "color": "#555"}})
        if phase == "forward" and a > 0 and step2 is None and any(p == "optimizer" for _, _, p, _ in timeline[:a]):
            step2 = a
    if step2 is not None:
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": step2 - 0.5, "x1": step2 - 0.5, "y0": 0,
                       "y1": 1, "line": {"color": "#444", "width": 1, "dash": "dash"}})
        notes.append({"x": step2, "y": 0.02, "xref": "x", "yref": "paper", "xanchor": "left", "showarrow": False,
                      "text": "step 2 (steady state: optimizer state exists)", "font": {"size": 11, "color": "#444"}})
    usable = result.usable
    if usable <= 3 * top:  # the card's line in view; far above the step it would flatten the curve
        shapes.append({"type": "line", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": usable, "y1": usable,
                       "line": {"color": "#b3261e", "width": 2, "dash": "dot"}})
        notes.append({"x": 0.005, "y": usable, "xref": "paper", "yref": "y", "xanchor": "left", "yanchor": "bottom",
                      "showarrow": False, "text": f"usable {esc(format_bytes(usable))}",
                      "font": {"color": "#b3261e", "size": 11}})
        hi = max(top, usable) * 1.08
    else:
        notes.append({"x": 0.005, "y": 1, "xref": "paper", "yref": "paper", "xanchor": "left", "yanchor": "top",
                      "showarrow": False, "text": f"usable {esc(format_bytes(usable))}: far above this scale",
                      "font": {"color": "#b3261e", "size": 11}})
        hi = top * 1.15
    return page.fig(data, {"title": {"text": "Memory timeline of two training steps (allocated bytes after each op, "
                                             "simulated)", "x": 0.01, "xanchor": "left"},
                           "xaxis": {"title": {"text": "op index"}, "range": [-0.5, len(timeline) - 0.5]},
                           "yaxis": {**page.bytes_axis(0, hi, log=False), "range": [0, hi],
                                     "title": {"text": "allocated"}},
                           "shapes": shapes, "annotations": notes, "margin": {"l": 90, "r": 30, "t": 110, "b": 60},
                           "legend": {"orientation": "h", "x": 0, "y": 1.12, "yanchor": "bottom"}}, height=460)


def conversions_timeline_figure(result) -> dict | None:
    """Each conversion's timeline beside the step as is, on one scale."""
    variants = [(n, s) for n, s in _variants(result) if getattr(s, "timeline", None) and n != "as is (float32)"]
    if len(variants) < 2:
        return None
    short = {n: n.replace("converted: ", "").replace("[checkpoint=True]", "[ckpt]") for n, _ in variants}
    axes, layout = page.facet_layout(["timeline"], [short[n] for n, _ in variants], gap=0.05)
    top = max(max(y for _, y, _, _ in s.timeline) for _, s in variants)
    hi = max(top, result.usable) * 1.08
    data, shapes = [], []
    for name, s in variants:
        xa, ya = axes[("timeline", short[name])]
        idx = _thin(s.timeline)
        data.append({"type": "scatter", "mode": "lines", "x": idx, "y": [s.timeline[i][1] for i in idx],
                     "xaxis": xa, "yaxis": ya, "showlegend": False, "line": {"color": "#1f77b4", "width": 1.2,
                                                                               "shape": "hv"},
                     "hovertemplate": "op %{x}<extra></extra>"})
        shapes.append({"type": "line", "xref": f"{xa} domain", "yref": ya, "x0": 0, "x1": 1, "y0": result.usable,
                       "y1": result.usable, "line": {"color": "#b3261e", "width": 2, "dash": "dot"}})
    for name in list(layout):
        if name.startswith("yaxis"):
            layout[name].update({**page.bytes_axis(0, hi, log=False), "range": [0, hi]})
        if name.startswith("xaxis"):
            layout[name].update({"title": {"text": "op index"}})
    for note in layout["annotations"]:
        note["text"] = note["text"].replace("timeline · ", "")
    layout["shapes"] = shapes
    return page.fig(data, {**layout, "title": {"text": "Each conversion side by side (same scale; dotted: usable "
                                                       "memory)", "x": 0.01, "xanchor": "left"},
                           "margin": {"l": 90, "r": 30, "t": 90, "b": 60}}, height=360)


def breakdown_figure(result) -> dict | None:
    """The peak by category, one bar per variant (stacked)."""
    variants = [(n, s) for n, s in _variants(result) if _ok(s)]
    if not variants:
        return None
    cats = list(dict.fromkeys(c for _, s in variants for c in s.breakdown))
    names = [esc(n) for n, _ in variants]
    data = [{"type": "bar", "orientation": "h", "name": esc(c), "y": names,
             "x": [s.breakdown.get(c, 0) for _, s in variants],
             "marker": {"color": CATEGORY_COLOURS.get(c, page.PALETTE[i % len(page.PALETTE)])},
             "customdata": [esc(format_bytes(s.breakdown.get(c, 0))) for _, s in variants],
             "hovertemplate": f"{esc(c)}: %{{customdata}}<extra></extra>"} for i, c in enumerate(cats)]
    hi = max(max(s.peak_total for _, s in variants), result.usable) * 1.05
    return page.fig(data, {"barmode": "stack", "title": {"text": "The peak by category, as is and converted", "x": 0.01,
                                                          "xanchor": "left"},
                           "xaxis": {**page.bytes_axis(0, hi, log=False), "range": [0, hi]},
                           "yaxis": {"automargin": True, "autorange": "reversed"},
                           "shapes": [{"type": "line", "xref": "x", "yref": "paper", "x0": result.usable,
                                       "x1": result.usable, "y0": 0, "y1": 1,
                                       "line": {"color": "#b3261e", "width": 2, "dash": "dot"}}],
                           "annotations": [{"x": result.usable, "y": 1, "xref": "x", "yref": "paper",
                                            "yanchor": "bottom", "showarrow": False,
                                            "text": f"usable {esc(format_bytes(result.usable))}",
                                            "font": {"color": "#b3261e", "size": 11}}],
                           "legend": {"orientation": "h", "x": 0, "y": 1.14, "yanchor": "bottom",
                                      "traceorder": "normal"},
                           "margin": {"l": 60, "r": 30, "t": 110, "b": 50}}, height=170 + 46 * len(variants))


def modules_figure(result) -> dict | None:
    s = result.step
    if not _ok(s) or not s.modules:
        return None
    names = list(s.modules)
    values = [s.modules[n] for n in names]
    return page.fig([{"type": "bar", "orientation": "h", "y": [esc(n) for n in names], "x": values,
                      "marker": {"color": ["#d62728" if "attention" in n else "#ff7f0e" for n in names]},
                      "text": [esc(format_bytes(v)) for v in values], "textposition": "auto", "showlegend": False,
                      "hovertemplate": "%{y}: %{text}<extra></extra>"}],
                    {"title": {"text": "Activations alive at the peak, by top-level module (as is)", "x": 0.01,
                               "xanchor": "left"},
                     "xaxis": page.bytes_axis(1, max(values) * 1.1, log=False),
                     "yaxis": {"automargin": True, "autorange": "reversed", "type": "category"},
                     "margin": {"l": 60, "r": 30, "t": 60, "b": 50}}, height=140 + 24 * len(names))


def figures(result) -> list[dict]:
    out = [timeline_figure(result), conversions_timeline_figure(result), breakdown_figure(result),
           modules_figure(result)]
    return [f for f in out if f is not None]


def _answer(result) -> str:
    s = result.step
    shape = getattr(result, "inputs", "") or "x".join(map(str, result.input_shape))
    amp = f", AMP {result.amp}" if result.amp else ""
    forced = getattr(result, "sdpa_backend", None)
    amp += "".join(f", {w}" for w in (f"accumulation {result.accumulation}" if getattr(result, "accumulation", 1) > 1
                                       else "", f"checkpointing {result.checkpointing}"
                                       if getattr(result, "checkpointing", None) else "",
                                       f"SDPA {forced} forced" if forced else "") if w)
    head = (f"{result.model}: batch {result.batch} of {shape}, {result.optimizer}{amp}, on {result.card}")
    if _ok(s):
        verdict = "fits" if result.fits else "does not fit"
        line = (f"peak <b>{esc(format_bytes(s.peak_total))}</b> of {esc(format_bytes(result.usable))} usable "
                f"({s.peak_total / result.usable:.0%}): <b>{verdict}</b>"
                + (f" ({esc(s.message)})" if getattr(s, "fits_cap", None) is False else ""))
    else:
        line = f"<b>does not fit</b>: {esc(s.message)}"
    bits = [f"<div class='rec'><span class='what'>{line}</span></div>"]
    if getattr(result, "ranks", ""):
        bits.append(f"<div class='rec'>{esc(result.ranks)}</div>")
        bits.extend(f"<div class='muted'>{esc(a)}</div>" for a in result.assumptions)
    if getattr(s, "time_s", None) is not None:  # the same figures as the JSON and the console
        from sa_profiler.engine import timing
        from sa_profiler.units import format_seconds

        sps = result.samples_per_second(s)
        bits.append(f"<div class='rec'>Time per step: <b>{esc(format_seconds(s.time_s))}</b>"
                    + (f", {sps:,.1f} samples/s" if sps is not None else "")
                    + f" (estimated, typical error x{timing.typical_factor():.2f}; the steady-state step: forward, "
                      "backward, optimizer)</div>")
    if result.max_batch is not None:
        per_rank = " per rank" if getattr(result, "ranks", "") else ""
        bits.append(f"<div class='rec'>Largest batch that fits{per_rank}: <b>{result.max_batch}</b></div>")
    if s.attention_layers and _ok(s):
        bits.append(f"<div class='rec'>Attention layers ({s.attention_layers}"
                    f"{', ' + str(s.sagan_layers) + ' SAGAN' if getattr(s, 'sagan_layers', 0) else ''}) hold "
                    f"<b>{esc(format_bytes(s.attention_bytes))}</b> of the peak "
                    f"({s.attention_bytes / s.peak_total:.0%}).</div>")
    fitting = [(label, c) for label, c in result.conversions.items() if _ok(c) and result.step_fits(c)]
    if fitting and not result.fits:
        label, c = min(fitting, key=lambda kv: kv[1].peak_total)
        bits.append(f"<div class='rec'>To make it fit: <code class='code'>{esc(_code(label))}</code> — the step "
                    f"then peaks at <b>{esc(format_bytes(c.peak_total))}</b>.</div>")
    elif result.conversions and result.fits:
        best = min(((lb, c) for lb, c in result.conversions.items() if _ok(c)), key=lambda kv: kv[1].peak_total,
                   default=None)
        if best and best[1].peak_total < s.peak_total:
            bits.append(f"<div class='muted'>Converted with <code>{esc(_code(best[0]))}</code> the step would peak at "
                        f"{esc(format_bytes(best[1].peak_total))}.</div>")
    cls = "answer" if result.fits or fitting else "answer none"
    return f"<div class='{cls}'><h3>{esc(head)}</h3>{''.join(bits)}</div>"


def _tensors(s) -> str:
    rows = "".join(f"<tr><td>{esc(format_bytes(t.bytes))}</td><td class='s'>{esc('x'.join(map(str, t.shape)))}</td>"
                   f"<td class='s'>{esc(t.dtype)}</td><td class='s'>{esc(t.op)}"
                   f"{(' (' + esc(t.note) + ')') if t.note else ''}</td><td class='s'>{esc(t.where or '(top level)')}"
                   f"</td><td class='s'>{esc(t.phase)}</td></tr>" for t in s.top_tensors)
    if not rows:
        return ""
    return ("<h2>Tensors alive at the peak</h2><p class='sub'>The largest allocations alive when the step peaked "
            "(parameters and input excluded): the op that made each and the module running then.</p>"
            "<table id='peak-tensors'><thead><tr><th>bytes</th><th class='s'>shape</th><th class='s'>dtype</th>"
            "<th class='s'>made by</th><th class='s'>module</th><th class='s'>phase</th></tr></thead><tbody>"
            f"{rows}</tbody></table>")


def _variants_table(result) -> str:
    rows = []
    for name, s in _variants(result):
        code = _code(name.split(": ", 1)[1].split(" (AMP")[0]) if name.startswith("converted: ") else ""
        fits = "yes" if _ok(s) and s.peak_total <= result.usable else "no"
        cats = ", ".join(f"{c} {format_bytes(b)}" for c, b in s.breakdown.items() if b) if _ok(s) else s.message
        rows.append(f"<tr><td class='s'>{esc(name)}</td><td>{esc(format_bytes(s.peak_total)) if _ok(s) else '-'}</td>"
                    f"<td class='s'>{fits}</td><td>{esc(format_bytes(s.attention_bytes)) if _ok(s) else '-'}</td>"
                    f"<td class='s'><code>{esc(code)}</code></td><td class='s'>{esc(cats)}</td></tr>")
    return ("<table id='variants'><thead><tr><th class='s'>step</th><th>peak</th><th class='s'>fits</th>"
            "<th>attention at the peak</th><th class='s'>change</th><th class='s'>by category</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _calls(s) -> str:
    calls = getattr(s, "attention_calls", None) or []
    if not calls:
        return ""
    rows = "".join(f"<tr><td class='s'>{esc(c.get('module'))}</td><td class='s'>{esc(c.get('backend'))}</td>"
                   f"<td>{esc(c.get('calls'))}</td><td class='s'>{esc(c.get('dtype'))}</td>"
                   f"<td class='s'>{esc(c.get('query'))}</td></tr>" for c in calls)
    return ("<h3>Attention calls and the SDPA backend the target runs</h3><table><thead><tr><th class='s'>module</th>"
            "<th class='s'>backend</th><th>calls</th><th class='s'>dtype</th><th class='s'>query shape</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>")


def title(result) -> str:
    return f"Will {result.model} train on {result.card}?"


def body(result, prefix: str, n_figures: int, command: str = "") -> str:
    divs = "\n".join(f'<div id="{prefix}{i}" class="plot"></div>' for i in range(n_figures))
    cmd = f"<h2>Command</h2><pre>{esc(command)}</pre>" if command else ""
    engine = getattr(result, "engine", "simulate")
    return (f"<h1>{esc(title(result))}</h1><p class='sub'>Two training steps ({esc(engine)}d; the second is the "
            "steady state, with the optimizer state already there). Memory sizes are binary (1 GiB = 2^30 bytes).</p>"
            f"<section id='answer'><h2>The answer</h2>{_answer(result)}</section>"
            f"<h2>Memory over the step</h2>{divs}"
            f"<h2>As is and converted</h2>{_variants_table(result)}{_calls(result.step)}{_tensors(result.step)}{cmd}")


def render(result, command: str = "") -> str:
    figs = figures(result)
    return page.document(title(result), body(result, "fig", len(figs), command), figs)


def fit_html_fragment(result) -> str:
    """For `FitResult._repr_html_`."""
    figs = figures(result)
    return page.fragment(lambda prefix: body(result, prefix, len(figs)), figs)


def write_html(result, out: str | Path, command: str = "") -> Path:
    return page.write(out, render(result, command))
