"""What every HTML view shares: escaping, plotly inlined, binary-unit axes, the page shell.

A page is one self-contained file: plotly.js inlined, no request to the network. Every string
from the user or the data goes through `esc` (HTML text and attributes) or `js` (data inside a
script: `<`, `>` and `&` written as \\u escapes, so no value can close the script it sits in).
A notebook fragment (`fragment`) is the same view as a piece of a page, with unique element ids
and plotly.js loaded under its own name even where the notebook has an AMD loader."""

from __future__ import annotations

import html
import json
import math
import uuid
from functools import lru_cache
from pathlib import Path

from sa_profiler.sweeps import files

MiB = 2**20
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22"]
DASHES = ["solid", "dash", "dot", "dashdot", "longdash"]
CONFIG = {"displaylogo": False, "responsive": True}


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def js(obj) -> str:
    return json.dumps(obj, default=_plain).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _plain(v):
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    return str(v)


@lru_cache(maxsize=1)
def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def short_bytes(n: float) -> str:
    """Tick labels: '512 MiB', '1 GiB', '1.5 GiB' (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def bytes_axis(lo: float, hi: float, log: bool = True, max_ticks: int = 8) -> dict:
    """A y axis in bytes with binary-unit ticks (powers of two on a log axis)."""
    lo, hi = max(float(lo), 1.0), max(float(hi), 2.0)
    if not log:
        step = 2 ** math.ceil(math.log2(max(hi / max_ticks, 1)))
        vals = [step * i for i in range(int(hi // step) + 2)]
        return {"tickvals": vals, "ticktext": [short_bytes(v) for v in vals], "rangemode": "tozero"}
    k0, k1 = math.floor(math.log2(lo)), math.ceil(math.log2(hi))
    stride = max(1, math.ceil((k1 - k0 + 1) / max_ticks))
    vals = [2.0 ** k for k in range(k0 - k0 % stride, k1 + stride, stride)]
    return {"type": "log", "tickvals": vals, "ticktext": [short_bytes(v) for v in vals],
            "range": [math.log10(lo) - 0.15, math.log10(hi) + 0.15]}


def short_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def time_axis(lo: float, hi: float) -> dict:
    """A log y axis in seconds labelled µs / ms / s: ticks at decades, or at 1-2-5 (then finer)
    steps where fewer than three decades show, so that a narrow range still reads."""
    lo, hi = max(float(lo), 1e-9), max(float(hi), 2e-9)
    shown = (math.log10(lo) - 0.15, math.log10(hi) + 0.15)
    k0, k1 = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1
    for steps in ((1,), (1, 2, 5), (1, 1.5, 2, 3, 5, 7)):
        vals = [m * 10.0 ** k for k in range(k0, k1 + 1) for m in steps]
        vals = [v for v in vals if shown[0] <= math.log10(v) <= shown[1]]
        if len(vals) >= 3:
            break
    return {"type": "log", "tickvals": vals, "ticktext": [short_time(v) for v in vals], "range": list(shown)}


def fig(data: list, layout: dict, height: int = 420) -> dict:
    base = {"template": None, "height": height, "font": {"family": "system-ui, sans-serif", "size": 12},
            "margin": {"l": 80, "r": 30, "t": 60, "b": 60}, "hovermode": "closest",
            "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom",
                       "font": {"size": 11}}}
    merged = {**base, **layout}
    if isinstance(merged.get("title"), dict):  # pinned to the top, clear of a legend above the plot
        merged["title"] = {"x": 0.01, "xanchor": "left", "y": 0.985, "yref": "container", "yanchor": "top",
                           "font": {"size": 15}, **merged["title"]}
    return {"data": data, "layout": merged}


def facet_layout(rows: list[str], cols: list[str], gap: float = 0.07, vgap: float = 0.16) -> tuple[dict, dict]:
    """Axes for a grid of small multiples: {(row, col): (xaxis name, yaxis name)} and the layout
    entries (domains, facet titles as annotations)."""
    axes, layout, notes = {}, {}, []
    nr, nc = len(rows), len(cols)
    w = (1 - gap * (nc - 1)) / nc
    h = (1 - vgap * (nr - 1)) / nr
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            n = i * nc + j + 1
            xa, ya = ("x", "y") if n == 1 else (f"x{n}", f"y{n}")
            x0 = j * (w + gap)
            y1 = 1 - i * (h + vgap)
            layout["xaxis" if n == 1 else f"xaxis{n}"] = {"domain": [x0, x0 + w], "anchor": ya}
            layout["yaxis" if n == 1 else f"yaxis{n}"] = {"domain": [y1 - h, y1], "anchor": xa}
            axes[(r, c)] = (xa, ya)
            notes.append({"text": f"<b>{esc(r)} · {esc(c)}</b>", "x": x0 + w / 2, "y": y1, "xref": "paper",
                          "yref": "paper", "xanchor": "center", "yanchor": "bottom", "showarrow": False,
                          "font": {"size": 12}})
    layout["annotations"] = notes
    return axes, layout


def plot_divs(figures: list[dict], prefix: str) -> tuple[str, str]:
    """The divs and the script that draws them."""
    divs = "\n".join(f'<div id="{prefix}{i}" class="plot"></div>' for i in range(len(figures)))
    calls = "\n".join(f"Plotly.newPlot('{prefix}{i}', {js(f['data'])}, {js(f['layout'])}, {js(CONFIG)});"
                      for i, f in enumerate(figures))
    return divs, calls


STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:1240px;margin:0 auto;padding:18px 24px 40px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}p.sub{color:#555;margin:0 0 12px}
.answer{background:#fff;border:1px solid #cfd8e3;border-left:6px solid #2a7d2e;border-radius:6px;padding:12px 16px;margin:12px 0}
.answer.none{border-left-color:#b3261e}.answer h3{margin:0 0 6px}
.rec{margin:6px 0 10px}.rec .what{font-size:16px}.rec code,.code{background:#eef3ee;padding:2px 6px;border-radius:4px;font-size:14px}
.derive{color:#444;font-size:13px;margin-top:8px}.muted{color:#666;font-size:12px}
.note{background:#fff4e5;border:1px solid #f0c36d;border-radius:4px;padding:6px 10px;margin:8px 0;font-size:13px}
.plot{width:100%;background:#fff;border:1px solid #e3e3e3;border-radius:6px;margin:10px 0}
table{border-collapse:collapse;font-size:12px;background:#fff}th,td{border:1px solid #e0e0e0;padding:3px 6px;text-align:right}td:not(.s){white-space:nowrap}
th{background:#f1f3f5;position:sticky;top:0}td.s,th.s{text-align:left}
.maps{display:grid;grid-template-columns:repeat(auto-fill,minmax(290px,1fr));gap:12px}
.map{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:8px;overflow-x:auto}.map h4{margin:0 0 6px;font-size:13px}
.map table{width:100%}.map td{padding:2px 3px;text-align:center;font-variant-numeric:tabular-nums}.map td.oom{background:#7f1d1d;color:#fff;font-weight:600}
.map td.na{background:#eee;color:#888}.map th{font-weight:500}
.legend-bar{display:flex;gap:10px;align-items:center;font-size:12px;margin:6px 0}
.sw{display:inline-block;width:14px;height:14px;border:1px solid #aaa;vertical-align:middle;margin-right:4px}
pre{background:#f3f3f3;padding:8px;white-space:pre-wrap;word-break:break-all;font-size:12px}
"""


def document(title: str, body: str, figures: list[dict], script: str = "") -> str:
    """A whole page: plotly inlined, figures drawn after the body."""
    divs_ok = body
    _, calls = plot_divs(figures, "fig")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{STYLE}</style>
<script>{plotly_js()}</script>
<script>{script}</script></head>
<body><main>
{divs_ok}
</main>
<script>{calls}</script>
</body></html>
"""


_plotly_inlined = False  # plotly.js went out with an earlier output of this process (one notebook)


def inline_plotly_again() -> None:
    """The next notebook output carries plotly.js again (after the output that had it was cleared)."""
    global _plotly_inlined
    _plotly_inlined = False


def fragment(body_of, figures: list[dict], script: str = "") -> str:
    """A piece of a notebook output: `body_of(prefix)` gives the HTML with figure divs named
    `prefix0`, `prefix1`, ...; ids are unique per call. plotly.js (about 4.7 MB) is inlined in
    the first output of the process only, so a notebook holds it once and still opens offline;
    later outputs draw once `window.Plotly` is there. Colab shows each output in a frame of its
    own, so there every output carries it."""
    global _plotly_inlined
    prefix = "sa" + uuid.uuid4().hex[:10] + "_"
    _, calls = plot_divs(figures, prefix)
    import sys

    loader = ""
    if not _plotly_inlined or "google.colab" in sys.modules:
        # an AMD loader (classic Jupyter's require.js) would take plotly.js as a module and leave
        # window.Plotly unset: hide `define` while it loads
        loader = (f"<script>(function(){{var d=window.define;window.define=undefined;try{{\n{plotly_js()}\n}}"
                  f"finally{{window.define=d;}}}})();</script>")
        _plotly_inlined = True
    note = ("plotly.js came with the first sa-profiler output of this notebook, which is not on this page "
            "(cleared?): run sa_profiler.report.page.inline_plotly_again() and this cell again")
    draw = (f"(function draw(n){{if(!window.Plotly){{if(n>200){{var e=document.getElementById('{prefix}0');"
            f"if(e){{e.textContent={json.dumps(note)};}}return;}}return setTimeout(function(){{draw(n+1);}},50);}}"
            f"\n{script}\n{calls}\n}})(0);")
    return (f"<div class=\"sa-profiler\"><style>{_scoped(prefix)}</style>{body_of(prefix)}</div>"
            f"{loader}<script>{draw}</script>")


def _scoped(prefix: str) -> str:
    """The page style, each rule limited to the fragment (the notebook's own styles stay)."""
    rules = []
    for rule in STYLE.strip().split("}"):
        if "{" not in rule:
            continue
        selectors, body = rule.split("{", 1)
        scoped = [".sa-profiler" if s.strip() in ("body", "main") else f".sa-profiler {s.strip()}"
                  for s in selectors.split(",")]
        rules.append(",".join(scoped) + "{" + body + "}")
    return "\n".join(rules)


def fits_colour(ratio: float) -> str:
    """Green (little of the usable memory) to red (all of it)."""
    r = min(max(ratio, 0.0), 1.0)
    return f"hsl({120 * (1 - r):.0f},70%,{82 - 10 * r:.0f}%)"


def write(out: str | Path, text: str) -> Path:
    """Write a page to a temporary name beside `out`, then rename it: never a half page."""
    return files.write_text(out, text)
