"""A self-contained HTML report of a results table: plotly inlined, no network request.

Plots: peak memory vs tokens (log-log, with the target's usable memory and N and N^2 guide
slopes), time vs tokens, the largest batch that fits vs resolution, and simulated vs measured
where both exist. Then a sortable table of every row, the environment and the command. Every
string from the data or the user is escaped; figure data is embedded as JSON with `<` written
as `\\u003c`, so no value can close the script it sits in.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import pandas as pd

from ..units import format_bytes

MiB = 2**20


def load(path: str | Path) -> pd.DataFrame:
    return prepare(pd.read_csv(path))


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for col in ("peak_bytes", "baseline_bytes", "total_bytes", "usable_bytes", "time_s", "tokens", "batch", "channels",
                "height", "width"):
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    if "total_bytes" not in frame or frame["total_bytes"].isna().all():
        frame["total_bytes"] = frame["peak_bytes"] + frame["baseline_bytes"].fillna(0)
    frame["label"] = frame.apply(_label, axis=1)
    if "target" in frame and frame.target.nunique() > 1:  # an atlas: one line per device as well
        frame["device"] = frame.apply(_device, axis=1)
        frame["label"] = frame.label + " @ " + frame.device
    return frame


def _device(row) -> str:
    name = row.get("device_name")
    return str(name) if isinstance(name, str) and name else str(row["target"])


def _label(row) -> str:
    opts = row.get("options")
    try:
        opts = json.loads(opts) if isinstance(opts, str) and opts else {}
    except json.JSONDecodeError:
        opts = {"options": str(opts)}
    # the chunk size follows the resolution in a sweep: leave it out so a line spans the grid
    extra = ",".join(f"{k}={v}" for k, v in opts.items() if k != "chunk")
    return f"{row['impl']}{'[' + extra + ']' if extra else ''} {row['dtype']} {row['mode']}"


PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]
DASHES = ["solid", "dash", "dot", "dashdot", "longdash"]


def _style(frame: pd.DataFrame):
    """One colour per implementation, one dash per batch: lines stay readable in big grids."""
    impls = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(sorted(frame.label.unique()))}
    batches = {b: DASHES[i % len(DASHES)] for i, b in enumerate(sorted(frame.batch.dropna().unique()))}
    return lambda label, batch: {"color": impls[label], "dash": batches.get(batch, "solid")}


def _fig(data: list, layout: dict) -> dict:
    base = {"template": None, "height": 430, "margin": {"l": 70, "r": 20, "t": 50, "b": 60},
            "legend": {"font": {"size": 10}}}
    return {"data": data, "layout": {**base, **layout}}


def memory_figure(frame: pd.DataFrame, usable: int | None) -> dict:
    ok = frame[frame.total_bytes.notna() & frame.status.isin(["ok", "oom"])]
    style = _style(frame)
    data = []
    for (label, batch, channels), g in ok.groupby(["label", "batch", "channels"], sort=True):
        g = g.sort_values("tokens")
        data.append({"type": "scatter", "mode": "lines+markers", "x": g.tokens.tolist(), "y": (g.total_bytes / MiB).tolist(),
                     "name": f"{label} B={batch} C={channels}", "legendgroup": label, "line": style(label, batch),
                     "marker": {"symbol": ["x" if s == "oom" else "circle" for s in g.status], "size": 7}})
    if len(ok):
        n0, n1 = ok.tokens.min(), ok.tokens.max()
        y0 = max(ok.total_bytes.min() / MiB, 1e-3)
        data.append({"type": "scatter", "mode": "lines", "x": [n0, n1], "y": [y0, y0 * n1 / n0], "name": "slope N",
                     "line": {"dash": "dot", "color": "gray"}})
        data.append({"type": "scatter", "mode": "lines", "x": [n0, n1], "y": [y0, y0 * (n1 / n0) ** 2], "name": "slope N^2",
                     "line": {"dash": "dash", "color": "gray"}})
    lines = {"": usable} if usable else {}
    if "device" in frame and "usable_bytes" in frame:  # an atlas: each card's own line
        lines = {f" {d}": int(u) for d, u in frame.groupby("device").usable_bytes.max().dropna().items()} or lines
    for i, (name, value) in enumerate(sorted(lines.items())):
        if len(ok):
            data.append({"type": "scatter", "mode": "lines", "x": [ok.tokens.min(), ok.tokens.max()],
                         "y": [value / MiB] * 2, "name": f"usable memory{name} ({format_bytes(value)})",
                         "line": {"color": "red", "width": 3, "dash": DASHES[i % len(DASHES)]}})
    return _fig(data, {"title": {"text": "Peak memory vs tokens (x: OOM on the target)"},
                       "xaxis": {"type": "log", "title": {"text": "tokens N = H x W"}},
                       "yaxis": {"type": "log", "title": {"text": "peak memory (MiB, binary)"}}})


def time_figure(frame: pd.DataFrame) -> dict:
    ok = frame[frame.time_s.notna() & (frame.status == "ok")]
    style = _style(frame)
    data = []
    for (label, batch, channels), g in ok.groupby(["label", "batch", "channels"], sort=True):
        g = g.sort_values("tokens")
        data.append({"type": "scatter", "mode": "lines+markers", "x": g.tokens.tolist(), "y": (g.time_s * 1e3).tolist(),
                     "name": f"{label} B={batch} C={channels}", "legendgroup": label, "line": style(label, batch)})
    return _fig(data, {"title": {"text": "Time per step vs tokens"},
                       "xaxis": {"type": "log", "title": {"text": "tokens N"}},
                       "yaxis": {"type": "log", "title": {"text": "time per step (ms)"}}})


def batch_figure(frame: pd.DataFrame, usable: int | None) -> dict:
    fits = frame[(frame.status == "ok") & frame.total_bytes.notna()]
    if "usable_bytes" in fits and fits.usable_bytes.notna().any():  # each row against its own card
        fits = fits[fits.total_bytes <= fits.usable_bytes.fillna(usable or float("inf"))]
    elif usable:
        fits = fits[fits.total_bytes <= usable]
    data = []
    for (label, channels), g in fits.groupby(["label", "channels"], sort=True):
        best = g.groupby(["height", "width"]).batch.max().reset_index().sort_values("height")
        data.append({"type": "scatter", "mode": "lines+markers", "x": [f"{h}x{w}" for h, w in zip(best.height, best.width)],
                     "y": best.batch.tolist(), "name": f"{label} C={channels}"})
    return _fig(data, {"title": {"text": "Largest batch in the grid that fits, by resolution"},
                       "xaxis": {"title": {"text": "resolution H x W"}, "type": "category"},
                       "yaxis": {"type": "log", "title": {"text": "batch"}}})


def comparison_figure(frame: pd.DataFrame) -> dict | None:
    if "source" not in frame or frame.source.nunique() < 2:
        return None
    keys = ["impl", "options", "batch", "channels", "height", "width", "dtype", "mode"]
    sim = frame[frame.source == "simulated"].set_index(keys)
    meas = frame[frame.source == "measured"].set_index(keys)
    both = sim[["peak_bytes", "label"]].join(meas[["peak_bytes"]], lsuffix="_sim", rsuffix="_meas", how="inner").dropna()
    if both.empty:
        return None
    err = (both.peak_bytes_sim - both.peak_bytes_meas) / both.peak_bytes_meas
    data = [{"type": "scatter", "mode": "markers", "x": (both.peak_bytes_meas / MiB).tolist(),
             "y": (both.peak_bytes_sim / MiB).tolist(), "name": "workloads",
             "text": [f"{lab}: {e:+.2%}" for lab, e in zip(both.label, err)]},
            {"type": "scatter", "mode": "lines", "x": [both.peak_bytes_meas.min() / MiB, both.peak_bytes_meas.max() / MiB],
             "y": [both.peak_bytes_meas.min() / MiB, both.peak_bytes_meas.max() / MiB], "name": "simulated = measured",
             "line": {"dash": "dash", "color": "gray"}}]
    return _fig(data, {"title": {"text": f"Simulated vs measured peak (worst error {err.abs().max():.2%}, median {err.abs().median():.2%})"},
                       "xaxis": {"type": "log", "title": {"text": "measured (MiB)"}},
                       "yaxis": {"type": "log", "title": {"text": "simulated (MiB)"}}})


def atlas_table(frame: pd.DataFrame) -> str:
    """Workloads down, one column per device: peak memory and time side by side (a sweep over
    several GPU kinds). Empty for a one-target table."""
    if "device" not in frame:
        return ""
    keys = ["impl", "options", "dtype", "mode", "channels", "height", "width", "batch"]
    frame = frame.assign(cell=[_atlas_cell(r) for _, r in frame.iterrows()])
    grid = frame.pivot_table(index=keys, columns="device", values="cell", aggfunc="first")
    devices = list(grid.columns)
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys) + "".join(
        f"<th>{html.escape(str(d))}</th>" for d in devices)
    body = []
    for idx, row in grid.iterrows():
        cells = "".join(f'<td class="s">{html.escape(str(v))}</td>' for v in idx)
        cells += "".join(f'<td>{html.escape(row[d]) if isinstance(row[d], str) else "-"}</td>' for d in devices)
        body.append(f"<tr>{cells}</tr>")
    return (f'<h2>Atlas: {len(devices)} devices</h2>\n<p>Peak memory over the baseline / time per step, by device.</p>\n'
            f'<table id="atlas"><thead><tr>{head}</tr></thead><tbody>\n' + "\n".join(body) + "\n</tbody></table>")


def _atlas_cell(row) -> str:
    if row["status"] != "ok":
        return str(row["status"])
    peak = "-" if row["peak_bytes"] != row["peak_bytes"] else format_bytes(int(row["peak_bytes"]))
    t = "" if row["time_s"] != row["time_s"] else f" / {row['time_s'] * 1e3:.3f} ms"
    return peak + t


TABLE_COLUMNS = ["impl", "options", "dtype", "mode", "batch", "channels", "height", "width", "tokens", "status", "backend",
                 "total_bytes", "peak_bytes", "time_s", "source", "device", "message"]

SORT_JS = """
function sortTable(col){var t=document.getElementById('rows');var b=t.tBodies[0];var r=Array.from(b.rows);
var asc=t.getAttribute('data-col')!=String(col)||t.getAttribute('data-dir')!='asc';
r.sort(function(x,y){var a=x.cells[col].getAttribute('data-v'),c=y.cells[col].getAttribute('data-v');
var na=parseFloat(a),nc=parseFloat(c);var v=(!isNaN(na)&&!isNaN(nc))?na-nc:a.localeCompare(c);return asc?v:-v;});
r.forEach(function(x){b.appendChild(x);});t.setAttribute('data-col',col);t.setAttribute('data-dir',asc?'asc':'desc');}
"""

STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}h1{font-size:22px}
table{border-collapse:collapse;font-size:12px}th,td{border:1px solid #ddd;padding:3px 6px;text-align:right}
th{cursor:pointer;background:#f3f3f3}td.s{text-align:left}.plot{max-width:1100px}pre{background:#f6f6f6;padding:8px}"""


def _json(obj) -> str:
    return json.dumps(obj, default=float).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _cell(col: str, value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return '<td data-v="">-</td>'
    if col in ("total_bytes", "peak_bytes"):
        return f'<td data-v="{int(value)}">{html.escape(format_bytes(int(value)))}</td>'
    if col == "time_s":
        return f'<td data-v="{float(value)}">{float(value) * 1e3:.3f} ms</td>'
    text = html.escape(str(value))
    cls = ' class="s"' if col in ("impl", "options", "status", "backend", "message", "dtype", "mode", "source",
                                  "device") else ""
    return f'<td{cls} data-v="{text}">{text}</td>'


def render(frame: pd.DataFrame, meta: dict) -> str:
    from plotly.offline import get_plotlyjs

    usable = meta.get("target", {}).get("usable_bytes")
    if usable is None and "usable_bytes" in frame and frame.usable_bytes.notna().any():
        usable = int(frame.usable_bytes.dropna().iloc[0])
    figures = [memory_figure(frame, usable), time_figure(frame), batch_figure(frame, usable), comparison_figure(frame)]
    figures = [f for f in figures if f is not None]
    divs = "\n".join(f'<div id="fig{i}" class="plot"></div>' for i in range(len(figures)))
    plots = "\n".join(f"Plotly.newPlot('fig{i}', {_json(f['data'])}, {_json(f['layout'])}, {{displaylogo: false}});"
                      for i, f in enumerate(figures))
    cols = [c for c in TABLE_COLUMNS if c in frame]
    head = "".join(f'<th onclick="sortTable({i})">{html.escape(c)}</th>' for i, c in enumerate(cols))
    body = "\n".join("<tr>" + "".join(_cell(c, row[c]) for c in cols) + "</tr>" for _, row in frame.iterrows())
    target = meta.get("target", {})
    names = [t.get("name", "") for t in meta.get("targets", [])] or [target.get("name", "results")]
    title = f"sa-profiler sweep: {', '.join(names)}"
    env = json.dumps(meta.get("environment", {}), indent=1)
    counts = frame.status.value_counts().to_dict()
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style>
<script>{get_plotlyjs()}</script>
<script>{SORT_JS}</script></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{len(frame)} workloads ({html.escape(', '.join(f'{k}: {v}' for k, v in counts.items()))}); target usable memory
{html.escape(format_bytes(usable) if usable else 'unknown')}; engine {html.escape(str(meta.get('engine', '')))}.
Memory sizes are binary (1 GiB = 2^30 bytes). Simulated times are roofline estimates.</p>
{divs}
{atlas_table(frame)}
<h2>All rows</h2>
<p>Click a column to sort.</p>
<table id="rows"><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table>
<h2>Command and environment</h2>
<pre>{html.escape(str(meta.get('command', '')))}</pre>
<pre>{html.escape(env)}</pre>
<script>{plots}</script>
</body></html>
"""


def write_report(results_csv: str | Path, out: str | Path | None = None, meta: dict | None = None) -> Path:
    results_csv = Path(results_csv)
    if meta is None:
        meta_path = results_csv.with_name("meta.json")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return write_html(load(results_csv), out or results_csv.with_name("report.html"), meta)


def write_html(frame: pd.DataFrame, out: str | Path, meta: dict) -> Path:
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render(prepare(frame), meta))
    os.replace(tmp, out)
    return out
