"""The sweep report's figures: small multiples faceted by mode and dtype (peak memory, time per
image, the largest batch by resolution, simulated vs measured)."""

from __future__ import annotations


import pandas as pd

from sa_profiler.engine import timing
from sa_profiler.units import format_bytes, format_seconds
from sa_profiler.report import page
from sa_profiler.report.page import esc


# -- plots --------------------------------------------------------------------------------
def _facets(frame: pd.DataFrame):
    modes = [m for m in ("forward", "train") if m in set(frame["mode"])] + sorted(
        set(frame["mode"]) - {"forward", "train"})
    dtypes = list(dict.fromkeys(frame.dtype))
    return modes, dtypes


def _styles(frame: pd.DataFrame):
    impls = list(dict.fromkeys(frame.impl_name))
    colours = {k: page.PALETTE[i % len(page.PALETTE)] for i, k in enumerate(impls)}
    variants = _variants(frame)
    dashes = {v: page.DASHES[i % len(page.DASHES)] for i, v in enumerate(variants)}
    return colours, dashes


def _variant(row, frame) -> str:
    bits = []
    if frame.channels.nunique() > 1:
        bits.append(f"C={int(row['channels'])}")
    if "device" in frame:
        bits.append(str(row["device"]))
    return " ".join(bits)


def _variants(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(_variant(r, frame) for r in frame.to_dict("records")))


def _legend_traces(colours: dict, dashes: dict) -> list[dict]:
    """A short legend: one entry per implementation (colour), one per variant (dash)."""
    out = [{"type": "scatter", "mode": "lines", "x": [None], "y": [None], "name": esc(name), "legendgroup": name,
            "line": {"color": c, "width": 3}, "showlegend": True, "hoverinfo": "skip"} for name, c in colours.items()]
    if len(dashes) > 1:
        out += [{"type": "scatter", "mode": "lines", "x": [None], "y": [None], "name": esc(v), "showlegend": True,
                 "line": {"color": "#555", "dash": d}, "hoverinfo": "skip"} for v, d in dashes.items()]
    return out


def _faceted(frame: pd.DataFrame, value, title: str, yaxis: dict, per_facet=None, x="tokens",
             hover=None) -> dict | None:
    """Small multiples: rows = modes, columns = dtypes; one line per implementation and variant."""
    modes, dtypes = _facets(frame)
    axes, layout = page.facet_layout(modes, dtypes)
    colours, dashes = _styles(frame)
    data, points = [], 0
    for (mode, dtype), (xa, ya) in axes.items():
        g = frame[(frame["mode"] == mode) & (frame.dtype == dtype)]
        for (impl, variant), line in g.groupby([g.impl_name, [_variant(r, frame) for r in g.to_dict("records")]],
                                               sort=False):
            line = line.sort_values("tokens")
            ys = [value(r) for r in line.to_dict("records")]
            if not any(y is not None for y in ys):
                continue
            points += sum(y is not None for y in ys)
            xs = line[x].tolist()
            trace = {"type": "scatter", "mode": "lines+markers", "x": xs, "y": ys, "xaxis": xa, "yaxis": ya,
                     "name": esc(impl), "legendgroup": impl, "showlegend": False,
                     "line": {"color": colours[impl], "dash": dashes.get(variant, "solid"), "width": 2},
                     "marker": {"size": 7}}
            if hover:
                trace["text"] = [hover(r) for r in line.to_dict("records")]
                trace["hovertemplate"] = "%{text}<extra></extra>"
                trace["marker"]["symbol"] = ["x-thin-open" if r["status"] == "oom" else "circle"
                                             for r in line.to_dict("records")]
                trace["marker"]["line"] = {"width": 2, "color": colours[impl]}
            data.append(trace)
        if per_facet:
            extra_data, extra_layout = per_facet(g, xa, ya)
            data += extra_data
            for k, v in extra_layout.items():
                layout.setdefault(k, []).extend(v)
    if not points:
        return None
    tokens = sorted(int(t) for t in frame.tokens.dropna().unique())
    bottom = {axes[(modes[-1], d)][0] for d in dtypes}
    for name in list(layout):
        if name.startswith("yaxis"):
            layout[name].update(yaxis)
        if name.startswith("xaxis"):
            short = "x" + name[5:]
            xtitle = {"text": "tokens N = H x W" if x == "tokens" else "resolution H x W"} if short in bottom else None
            layout[name].update({"type": "log", "tickvals": tokens, "ticktext": [f"{t:,}" for t in tokens],
                                 "title": xtitle} if x == "tokens" else {"type": "category", "title": xtitle})
    data = _legend_traces(colours, dashes) + data
    top, bottom_margin = 110, 60
    height = top + bottom_margin + 320 * len(modes)
    legend = {"orientation": "h", "x": 0, "xanchor": "left", "yanchor": "bottom",
              "y": 1 + 26 / (height - top - bottom_margin), "font": {"size": 12}}
    return page.fig(data, {**layout, "legend": legend,
                           "title": {"text": esc(title), "x": 0.01, "xanchor": "left", "y": 0.995,
                                     "yanchor": "top", "yref": "container", "font": {"size": 15}},
                           "margin": {"l": 80, "r": 30, "t": top, "b": bottom_margin}}, height=height)


def _small_batch(frame: pd.DataFrame) -> pd.DataFrame:
    """Each configuration at the grid's smallest batch (per image, for lines that span N)."""
    b0 = frame.batch.min()
    return frame[frame.batch == b0]


def memory_figure(frame: pd.DataFrame, usable: int | None = None) -> dict | None:
    base = _small_batch(frame)
    base = base[base.total_bytes.notna() & base.status.isin(["ok", "oom"])]
    if base.empty:
        return None
    b0 = int(base.batch.min())
    lines = _usable_lines(frame, usable)
    lo = min(base.total_bytes.min(), min(lines.values(), default=base.total_bytes.min()))
    hi = max(base.total_bytes.max(), max(lines.values(), default=0))
    n0, n1 = base.tokens.min(), base.tokens.max()

    def per_facet(g, xa, ya):
        g = g[g.batch == b0]
        g = g[g.total_bytes.notna() & g.status.isin(["ok", "oom"])]
        data, shapes, notes = [], [], []
        if len(g) and n1 > n0:
            y0 = g[g.tokens == g.tokens.min()].total_bytes.min()
            for power, label in ((1, "∝ N"), (2, "∝ N²")):
                data.append({"type": "scatter", "mode": "lines+text", "x": [n0, n1],
                             "y": [y0, y0 * (n1 / n0) ** power], "xaxis": xa, "yaxis": ya, "showlegend": False,
                             "text": ["", label], "textposition": "top left", "hoverinfo": "skip",
                             "textfont": {"color": "#777", "size": 11},
                             "line": {"color": "#999", "dash": "dot", "width": 1}})
        for i, (name, value) in enumerate(lines.items()):
            shapes.append({"type": "line", "xref": f"{xa} domain", "yref": ya, "x0": 0, "x1": 1, "y0": value,
                           "y1": value, "line": {"color": "#b3261e", "width": 2, "dash": page.DASHES[i % 5]}})
            notes.append({"text": f"usable {esc(format_bytes(value))}{' ' + esc(name) if name else ''}",
                          "xref": f"{xa} domain", "yref": ya, "x": 0.01, "y": math_log10(value), "xanchor": "left",
                          "yanchor": "bottom", "showarrow": False, "font": {"color": "#b3261e", "size": 11}})
        return data, {"shapes": shapes, "annotations": notes}

    def hover(r):
        what = "out of memory: would need" if r["status"] == "oom" else "peak"
        return (f"{esc(r['impl_name'])} {esc(r['dtype'])} {esc(r['mode'])} C={int(r['channels'])} "
                f"{esc(r['resolution'])} B={int(r['batch'])}<br>{what} {esc(format_bytes(int(r['total_bytes'])))}")

    return _faceted(base, lambda r: r["total_bytes"] if r["total_bytes"] == r["total_bytes"] else None,
                    f"Peak memory vs tokens at batch {b0} (baseline included; × : out of memory on the target)",
                    page.bytes_axis(lo, hi), per_facet, hover=hover)


def math_log10(v: float) -> float:
    import math

    return math.log10(v)


def _usable_lines(frame: pd.DataFrame, usable: int | None) -> dict[str, int]:
    if "device" in frame and "usable_bytes" in frame:
        lines = {str(d): int(u) for d, u in frame.groupby("device").usable_bytes.max().dropna().items()}
        if lines:
            return lines
    if usable:
        return {"": int(usable)}
    if "usable_bytes" in frame and frame.usable_bytes.notna().any():
        return {"": int(frame.usable_bytes.dropna().iloc[0])}
    return {}


def time_figure(frame: pd.DataFrame) -> dict | None:
    base = _small_batch(frame)
    base = base[base.time_s.notna() & (base.status == "ok")]
    if base.empty:
        return None
    per = base.time_s / base.batch
    b0 = int(base.batch.min())
    measured = "source" in base and (base.source == "measured").all()

    def hover(r):
        return (f"{esc(r['impl_name'])} {esc(r['dtype'])} {esc(r['mode'])} C={int(r['channels'])} "
                f"{esc(r['resolution'])}<br>{esc(format_seconds(r['time_s'] / r['batch']))} per image")

    how = "measured" if measured else f"estimated, typical error x{timing.typical_factor():.2f}"
    return _faceted(base, lambda r: r["time_s"] / r["batch"], f"Time per image vs tokens at batch {b0} ({how})",
                    page.time_axis(per.min(), per.max()), hover=hover)


def batch_figure(frame: pd.DataFrame, largest: pd.DataFrame | None = None, usable: int | None = None) -> dict | None:
    if largest is None or largest.empty:
        return None
    lg = largest.copy()
    if "device" in frame:
        lg["device"] = [r["device_name"] or str(r["target"]) for r in lg.to_dict("records")]
    fits = lg[lg.max_batch > 0]
    if fits.empty:
        return None
    grid_max = int(frame.batch.max())
    hi = max(int(fits.max_batch.max()), grid_max)
    order = list(dict.fromkeys(lg.sort_values("tokens").resolution))

    def per_facet(g, xa, ya):
        shapes = [{"type": "line", "xref": f"{xa} domain", "yref": ya, "x0": 0, "x1": 1, "y0": grid_max,
                   "y1": grid_max, "line": {"color": "#888", "dash": "dot", "width": 1}}]
        notes = [{"text": f"grid's largest batch ({grid_max})", "xref": f"{xa} domain", "yref": ya, "x": 0.99,
                  "y": math_log10(grid_max), "xanchor": "right", "yanchor": "bottom", "showarrow": False,
                  "font": {"color": "#666", "size": 10}}]
        return [], {"shapes": shapes, "annotations": notes}

    def hover(r):
        mb = int(r["max_batch"])
        return (f"{esc(r['impl_name'])} {esc(r['dtype'])} {esc(r['mode'])} C={int(r['channels'])} "
                f"{esc(r['resolution'])}<br>largest batch {mb}" +
                (f", peak {esc(format_bytes(int(r['total_bytes'])))}" if mb else ": one image does not fit"))

    fig = _faceted(lg, lambda r: int(r["max_batch"]) if r["max_batch"] > 0 else None,
                   "Largest batch that fits, by resolution (the engine's search under the usable memory; "
                   "a missing point: one image does not fit)",
                   {"type": "log", "title": {"text": "largest batch"}, "range": [-0.1, math_log10(hi * 2)], "dtick": 1},
                   per_facet, x="resolution", hover=hover)
    if fig:
        for name, axis in fig["layout"].items():
            if name.startswith("xaxis"):
                axis.update({"categoryorder": "array", "categoryarray": order})
    return fig


def comparison_figure(frame: pd.DataFrame) -> dict | None:
    if "source" not in frame or frame.source.nunique() < 2:
        return None
    keys = ["impl", "options", "batch", "channels", "height", "width", "dtype", "mode"]
    sim = frame[frame.source == "simulated"].set_index(keys)
    meas = frame[frame.source == "measured"].set_index(keys)
    both = sim[["peak_bytes", "label"]].merge(meas[["peak_bytes"]], left_index=True, right_index=True, how="inner",
                                              suffixes=("_sim", "_meas")).dropna()
    if both.empty:
        return None
    err = (both.peak_bytes_sim - both.peak_bytes_meas) / both.peak_bytes_meas
    lo, hi = both.peak_bytes_meas.min(), both.peak_bytes_meas.max()
    data = [{"type": "scatter", "mode": "markers", "x": both.peak_bytes_meas.tolist(), "y": both.peak_bytes_sim.tolist(),
             "name": "workloads", "text": [f"{esc(lab)}: {e:+.2%}" for lab, e in zip(both.label, err)]},
            {"type": "scatter", "mode": "lines", "x": [lo, hi], "y": [lo, hi], "name": "simulated = measured",
             "line": {"dash": "dash", "color": "gray"}}]
    axis = page.bytes_axis(min(lo, both.peak_bytes_sim.min()), max(hi, both.peak_bytes_sim.max()))
    return page.fig(data, {"title": {"text": f"Simulated vs measured peak (worst error {err.abs().max():.2%}, "
                                             f"median {err.abs().median():.2%})", "x": 0, "xanchor": "left"},
                           "xaxis": {**axis, "title": {"text": "measured"}},
                           "yaxis": {**axis, "title": {"text": "simulated"}}, "margin": {"l": 80, "r": 30, "t": 90,
                                                                                       "b": 60}})
