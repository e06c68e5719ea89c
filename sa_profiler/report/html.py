"""The sweep report: a decision page in one self-contained HTML file (plotly inlined, offline).

From the top: the answer for the target (per mode, the implementation, dtype and batch to use,
the line of code to change, and how the usable memory was derived), the fits map (resolution x
batch cells per implementation and dtype, coloured by peak / usable memory, out-of-memory cells
marked, with the engine's largest batch beside the grid's), small-multiple plots faceted by mode
and dtype (peak memory in binary units with the usable-memory line and N / N^2 slopes, time per
image, the largest batch by resolution from the engine's own search, simulated vs measured where
both exist), and every row in a table grouped by configuration, sortable and filterable. Every
string from the data or the user is escaped (see `page`).

This module assembles the page and its answer; the frame is read in `sweep_frame.py`, the
figures drawn in `sweep_figures.py`, the fits map and the tables in `sweep_tables.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from sa_profiler.engine import timing
from sa_profiler.units import format_bytes, format_seconds
from sa_profiler.report import page
from sa_profiler.report.page import esc
# the figures, tables and frame helpers the page is made of (tests read them from here too)
from sa_profiler.report.sweep_figures import _usable_lines, batch_figure, comparison_figure, memory_figure, time_figure  # noqa: F401
from sa_profiler.report.sweep_frame import (MODE_TITLE, SweepFileError, _impl_name, _label, _options, load,  # noqa: F401
                                           load_largest, prepare, read_meta)
from sa_profiler.report.sweep_tables import (  # noqa: F401
    TABLE_JS, TABLE_STYLE, _atlas_cell, _cell, _map_card, _map_cell, atlas_table, fits_map_html, rows_table,
)


# -- the answer ---------------------------------------------------------------------------
def _rows_of(g: pd.DataFrame) -> list:
    """recommend.Row objects from the engine's search rows (one shape, one mode)."""
    from sa_profiler.engine import Record, Workload
    from sa_profiler.advice.recommend import Row

    out = []
    for r in g.to_dict("records"):
        opts = _options(r)
        try:
            w = Workload(r["impl"], 1, int(r["channels"]), int(r["height"]), int(r["width"]), r["dtype"], r["mode"],
                         str(r["target"]), tuple(sorted(opts.items())))
            row = Row(r["impl"], opts, r["dtype"], r["mode"], status=r["status"] if r["status"] != "oom" else "ok",
                      message=r["message"], backend=r["backend"])
            row.exact  # noqa: B018 - an implementation the registry knows
        except (KeyError, ValueError, TypeError):
            continue
        mb = int(r["max_batch"]) if r["max_batch"] == r["max_batch"] else 0
        per = r["per_image_bytes"]
        row.per_image = Record(w, peak_bytes=int(per) if per == per else None, baseline_bytes=0,
                               status="ok" if per == per else r["status"])
        if mb:
            t = r["time_s"]
            row.at_batch = Record(w.with_batch(mb), peak_bytes=int(r["total_bytes"]), baseline_bytes=0,
                                  time_s=float(t) if t == t else None)
        row.batch = row.max_batch = mb
        row.fits = mb > 0
        out.append(row)
    return out


def recommendations(largest: pd.DataFrame | None) -> list[dict]:
    """Per target and mode: the recommendation at the sweep's largest map (largest channels
    among the largest resolutions), and the best at each resolution."""
    from sa_profiler.advice.recommend import NoAnswer, Recommendation, recommend

    if largest is None or largest.empty:
        return []
    out = []
    for target, tg in largest.groupby("target", sort=False):
        for mode, mg in tg.groupby("mode", sort=False):
            shapes = mg[["channels", "height", "width", "tokens"]].drop_duplicates().sort_values(
                ["tokens", "channels"])
            by_shape = []
            for s in shapes.to_dict("records"):
                g = mg[(mg.channels == s["channels"]) & (mg.height == s["height"]) & (mg.width == s["width"])]
                rows = _rows_of(g)
                try:
                    rec = recommend(rows, mode, None)
                except NoAnswer as err:  # the page says why there is no answer for this shape
                    rec = Recommendation(None, mode, str(err))
                by_shape.append((s, rows, rec))
            out.append({"target": target, "device": mg.device_name.iloc[0] or str(target), "mode": mode,
                        "usable": int(mg.usable_bytes.iloc[0]), "shapes": by_shape})
    return out


def _derivation(meta: dict, target_key: str, usable: int) -> str:
    targets = meta.get("targets") or [meta.get("target", {})]
    t = next((t for t in targets if t.get("key") == target_key), targets[0] if targets else {})
    total = t.get("total_memory")
    if not total:
        return f"usable memory {esc(format_bytes(usable))}"
    if "context_bytes" in t and "headroom_bytes" in t:
        return (f"usable memory = {esc(format_bytes(total))} (the card, as torch reports it) − "
                f"{esc(format_bytes(t['context_bytes']))} (CUDA context and library handles, which "
                f"max_memory_allocated does not count) − {esc(format_bytes(t['headroom_bytes']))} (headroom: "
                f"what the simulator does not model, chiefly cuDNN convolution workspaces) = "
                f"<b>{esc(format_bytes(usable))}</b>")
    return (f"usable memory = {esc(format_bytes(total))} (the card) − {esc(format_bytes(total - usable))} "
            f"(CUDA context and headroom) = <b>{esc(format_bytes(usable))}</b>")


def _rec_line(rec, usable: int) -> str:
    r = rec.row
    at = r.at_batch
    peak = at.peak_bytes if at else None
    t = r.time_per_image
    bits = [f"peak {esc(format_bytes(peak))} of {esc(format_bytes(usable))} ({peak / usable:.0%})" if peak else "",
            f"{esc(format_seconds(t))} per image (estimate)" if t else ""]
    return (f'<span class="what"><b>{esc(r.display)}</b> ({esc(r.backend or "bmm")}) in <b>{esc(r.dtype)}</b>, '
            f'batch <b>{r.max_batch}</b></span> — {", ".join(b for b in bits if b)}<br>'
            f'change: <code class="code">{esc(r.code())}</code>')


def answer_html(recs: list[dict], meta: dict) -> str:
    if not recs:
        return ('<div class="answer none"><h3>No recommendation</h3>The results carry no usable memory to '
                'search against.</div>')
    parts = []
    for item in recs:
        s, rows, rec = item["shapes"][-1]
        shape = f"{int(s['channels'])} x {int(s['height'])} x {int(s['width'])}"
        title = (f"{MODE_TITLE.get(item['mode'], item['mode'])} at {shape} (N = {int(s['tokens'])}, the largest "
                 f"map of the sweep) on {item['device']}")
        if rec.row is None:
            body = f"<div class='rec'><b>Nothing exact fits even one image</b>: {esc(rec.reason)}.</div>"
        else:
            body = f"<div class='rec'>{_rec_line(rec, item['usable'])}</div>"
        ref = [r for r in rows if r.impl == "reference" and r.per_image and r.per_image.peak_bytes]
        if ref and rec.row is not None and rec.row.impl != "reference":
            worst = max(ref, key=lambda r: r.per_image.peak_bytes)
            best_ref = max(ref, key=lambda r: r.max_batch)
            need = (f"{esc(format_bytes(min(r.per_image.peak_bytes for r in ref)))}–"
                    f"{esc(format_bytes(worst.per_image.peak_bytes))}" if len(ref) > 1 else
                    esc(format_bytes(worst.per_image.peak_bytes)))
            fit = (f"largest batch {best_ref.max_batch} ({esc(best_ref.dtype)})" if best_ref.max_batch else
                   "does not fit one image")
            body += f"<div class='muted'>The classic layer (reference): {need} for one image; {fit}.</div>"
        others = []
        for s2, _, rec2 in item["shapes"][:-1]:
            res = f"{int(s2['channels'])}x{int(s2['height'])}x{int(s2['width'])}"
            if rec2.row is None:
                others.append(f"<tr><td class='s'>{esc(res)}</td><td class='s' colspan='3'>nothing fits</td></tr>")
            else:
                r2 = rec2.row
                others.append(f"<tr><td class='s'>{esc(res)}</td><td class='s'>{esc(r2.display)} "
                              f"({esc(r2.backend or 'bmm')}) {esc(r2.dtype)}</td><td>{r2.max_batch}</td>"
                              f"<td class='s'><code>{esc(r2.code())}</code></td></tr>")
        if others:
            body += ("<details><summary>Smaller maps of the sweep</summary><table><thead><tr><th class='s'>C x H x W"
                     "</th><th class='s'>use</th><th>batch</th><th class='s'>change</th></tr></thead><tbody>"
                     + "".join(others) + "</tbody></table></details>")
        body += f"<div class='derive'>{_derivation(meta, item['target'], item['usable'])}. Batches come from the " \
                "engine's search (on the simulator under that memory), not from the grid.</div>"
        cls = "answer" if rec.row is not None else "answer none"
        parts.append(f"<div class='{cls}'><h3>{esc(title)}</h3>{body}</div>")
    return "\n".join(parts)


# -- the page -----------------------------------------------------------------------------
def _usable(frame: pd.DataFrame, meta: dict) -> int | None:
    usable = meta.get("target", {}).get("usable_bytes")
    if usable is None and "usable_bytes" in frame and frame.usable_bytes.notna().any():
        usable = int(frame.usable_bytes.dropna().iloc[0])
    return usable


def figures(frame: pd.DataFrame, meta: dict, largest: pd.DataFrame | None) -> list[dict]:
    usable = _usable(frame, meta)
    out = [memory_figure(frame, usable), time_figure(frame), batch_figure(frame, largest, usable),
           comparison_figure(frame)]
    return [f for f in out if f is not None]


def _title(frame: pd.DataFrame, meta: dict) -> str:
    target = meta.get("target", {})
    names = [t.get("name", "") for t in meta.get("targets", [])] or [target.get("name", "")]
    names = [n for n in names if n] or list(dict.fromkeys(frame.get("device_name", pd.Series(dtype=str)))) or ["results"]
    return f"Self-attention on {', '.join(map(str, names))}: what fits and what to use"


def body(frame: pd.DataFrame, meta: dict, largest: pd.DataFrame | None, prefix: str, n_figures: int,
         notes=()) -> str:
    counts = frame.status.value_counts().to_dict()
    grid = (f"{len(frame)} workloads ({', '.join(f'{v} {k}' for k, v in counts.items())}): implementations "
            f"{', '.join(dict.fromkeys(frame.impl_name))}; dtypes {', '.join(dict.fromkeys(frame.dtype))}; channels "
            f"{', '.join(str(int(c)) for c in sorted(frame.channels.unique()))}; resolutions "
            f"{', '.join(dict.fromkeys(frame.sort_values('tokens').resolution))}; batches "
            f"{', '.join(str(int(b)) for b in sorted(frame.batch.unique()))}; engine {meta.get('engine', '?')}")
    divs = "\n".join(f'<div id="{prefix}{i}" class="plot"></div>' for i in range(n_figures))
    env = json.dumps(meta.get("environment", {}), indent=1)
    note_html = "".join(f"<div class='note'>{esc(n)}</div>" for n in notes)
    return f"""<h1>{esc(_title(frame, meta))}</h1>
<p class="sub">{esc(grid)}. Memory sizes are binary (1 GiB = 2^30 bytes); simulated times are estimates (typical error x{timing.typical_factor():.2f}).</p>
{note_html}
<section id="answer"><h2>The answer</h2>{answer_html(recommendations(largest), meta)}</section>
{fits_map_html(frame, largest)}
<h2 id="plots">Plots</h2>
{divs}
{atlas_table(frame)}
<h2 id="table">All rows, by configuration</h2>
{rows_table(frame, largest)}
<h2>Command and environment</h2>
<pre>{esc(meta.get('command', ''))}</pre>
{f"<p class='muted'>Results: {esc(meta['results'])}</p>" if meta.get('results') else ''}
<pre>{esc(env)}</pre>"""


def render(frame: pd.DataFrame, meta: dict, largest: pd.DataFrame | None = None) -> str:
    notes = frame.attrs.get("notes", [])
    frame = prepare(frame) if "impl_name" not in frame else frame
    figs = figures(frame, meta, largest)
    return page.document(_title(frame, meta), f"<style>{TABLE_STYLE}</style>" +
                         body(frame, meta, largest, "fig", len(figs), notes), figs, TABLE_JS)


def write_report(results_csv: str | Path, out: str | Path | None = None, meta: dict | None = None,
                 on_note=None) -> Path:
    """The report of a sweep's results.csv (with meta.json and largest.csv beside it, as they
    are: `sweeps.largest.ensure` searches a missing largest.csv); `on_note(text)` hears about
    duplicate rows."""
    results_csv = Path(results_csv)
    if meta is None:
        meta = read_meta(results_csv.parent)
    meta = {**meta, "results": str(results_csv)}
    frame = load(results_csv)
    for note in frame.attrs.get("notes", []) if on_note else ():
        on_note(note)
    return write_html(frame, out or results_csv.with_name("report.html"), meta,
                      load_largest(results_csv.parent))


def write_html(frame: pd.DataFrame, out: str | Path, meta: dict, largest: pd.DataFrame | None = None) -> Path:
    return page.write(out, render(prepare(frame), meta, largest))


class SweepResult:
    """A sweep folder as an object: `frame` (one row per workload), `meta`, `largest` (the
    engine's largest batch per configuration), `recommendations`; it renders itself in a
    notebook (`_repr_html_`) and writes the report (`write_html`)."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        path = folder / "results.csv" if folder.is_dir() else folder
        self.folder = path.parent
        self.meta = read_meta(self.folder)
        self.meta["results"] = str(path)
        self.frame = load(path)
        self.notes = self.frame.attrs.get("notes", [])
        self.largest = load_largest(self.folder)

    @property
    def recommendations(self) -> list[dict]:
        return recommendations(self.largest)

    def write_html(self, out: str | Path) -> Path:
        return write_html(self.frame, out, self.meta, self.largest)

    def __repr__(self) -> str:  # the short answer, in a plain Python or IPython terminal
        targets = sorted({str(t) for t in self.frame.get("target", [])}) if len(self.frame) else []
        return f"SweepResult({self.folder}: {len(self.frame)} rows on {', '.join(targets) or 'no target'})"

    def _repr_html_(self) -> str:
        figs = figures(self.frame, self.meta, self.largest)
        return page.fragment(lambda prefix: f"<style>{TABLE_STYLE}</style>" +
                             body(self.frame, self.meta, self.largest, prefix, len(figs), self.notes), figs, TABLE_JS)


def open_sweep(folder: str | Path) -> SweepResult:
    """`open_sweep("reports/forum-t4")`: a finished (or interrupted) sweep, ready to look at (its
    largest batches searched first where the folder lacks them)."""
    from sa_profiler.sweeps.largest import ensure

    folder = Path(folder)
    ensure(folder if folder.is_dir() else folder.parent)
    return SweepResult(folder)
