"""The sweep report: a decision page in one self-contained HTML file (plotly inlined, offline).

From the top: the answer for the target (per mode, the implementation, dtype and batch to use,
the line of code to change, and how the usable memory was derived), the fits map (resolution x
batch cells per implementation and dtype, coloured by peak / usable memory, out-of-memory cells
marked, with the engine's largest batch beside the grid's), small-multiple plots faceted by mode
and dtype (peak memory in binary units with the usable-memory line and N / N^2 slopes, time per
image, the largest batch by resolution from the engine's own search, simulated vs measured where
both exist), and every row in a table grouped by configuration, sortable and filterable. Every
string from the data or the user is escaped (see `page`).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd

from ..engine import timing
from ..units import format_bytes, format_seconds
from . import page
from .page import esc

MiB = 2**20
NUMERIC = ("peak_bytes", "baseline_bytes", "total_bytes", "usable_bytes", "time_s", "tokens", "batch", "channels",
           "height", "width")
MODE_TITLE = {"forward": "Inference (forward, no_grad)", "train": "Training (forward + backward)"}


# -- data ---------------------------------------------------------------------------------
def load(path: str | Path) -> pd.DataFrame:
    """A results.csv as a frame, one row per workload (the last row of a repeated key wins,
    and `frame.attrs['notes']` says so)."""
    from ..sweep import dedupe, duplicates_note

    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    notes = []
    if "key" in frame and frame.key.duplicated().any():
        rows, dropped = dedupe(frame.to_dict("records"))
        frame = pd.DataFrame(rows, columns=frame.columns)
        notes.append(duplicates_note(path, dropped, len(frame)))
    frame = prepare(frame)
    frame.attrs["notes"] = notes
    return frame


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    notes = frame.attrs.get("notes", [])
    frame = frame.drop(columns=[c for c in ("top_tensors", "host", "time_method") if c in frame])  # unused here
    for col in NUMERIC:
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    if "total_bytes" not in frame or frame["total_bytes"].isna().all():
        frame["total_bytes"] = frame["peak_bytes"] + frame["baseline_bytes"].fillna(0)
    for col in ("options", "message", "backend", "source", "device_name"):
        if col in frame:
            frame[col] = _text(frame[col])
    records = frame[[c for c in ("impl", "options", "dtype", "mode") if c in frame]].to_dict("records")
    frame["label"] = [_label(r) for r in records]
    frame["impl_name"] = [_impl_name(r) for r in records]
    frame["resolution"] = [f"{int(h)}x{int(w)}" for h, w in zip(frame.height, frame.width)]
    if "target" in frame and frame.target.nunique() > 1:  # an atlas: the device in every name
        frame["device"] = [_device(r) for r in frame.to_dict("records")]
        frame["label"] = frame.label + " @ " + frame.device
    frame.attrs["notes"] = notes
    return frame


def _text(col: pd.Series) -> list[str]:
    return ["" if v is None or v != v else str(v) for v in col]


def _options(row) -> dict:
    opts = row.get("options")
    try:
        return json.loads(opts) if isinstance(opts, str) and opts else {}
    except json.JSONDecodeError:
        return {"options": str(opts)}


def _label(row) -> str:
    # the chunk size follows the resolution in a sweep: leave it out so a line spans the grid
    extra = ",".join(f"{k}={v}" for k, v in _options(row).items() if k != "chunk")
    return f"{row['impl']}{'[' + extra + ']' if extra else ''} {row['dtype']} {row['mode']}"


def _impl_name(row) -> str:
    """The implementation as a reader names it (one colour in the plots): sdpa, sdpa:flash,
    chunked, pooled 2x2."""
    o = _options(row)
    name = str(row["impl"])
    if o.get("backend"):
        name += f":{o['backend']}"
    if o.get("layout"):
        name += f" {o['layout']}"
    if "pool" in o:
        name += f" {o['pool']}x{o['pool']}"
    return name


def _device(row) -> str:
    name = row.get("device_name")
    return str(name) if isinstance(name, str) and name else str(row["target"])


def load_largest(folder: str | Path, frame: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """largest.csv of a sweep folder; searched from the results (and written) when missing."""
    from .. import batch_search

    path = Path(folder) / batch_search.LARGEST
    if not path.exists():
        if frame is None or "usable_bytes" not in frame or not frame.usable_bytes.notna().any():
            return None
        rows = [{k: ("" if v is None or v != v else v) for k, v in r.items()} for r in frame.to_dict("records")]
        batch_search.write(batch_search.search(rows), folder)
    largest = pd.read_csv(path, keep_default_na=False, na_values=[""])
    for col in ("per_image_bytes", "max_batch", "total_bytes", "time_s", "usable_bytes", "tokens", "channels",
                "height", "width"):
        largest[col] = pd.to_numeric(largest[col], errors="coerce")
    for col in ("options", "message", "backend", "device_name"):
        largest[col] = _text(largest[col])
    largest["impl_name"] = [_impl_name(r) for r in largest.to_dict("records")]
    largest["resolution"] = [f"{int(h)}x{int(w)}" for h, w in zip(largest.height, largest.width)]
    return largest


# -- the answer ---------------------------------------------------------------------------
def _rows_of(g: pd.DataFrame) -> list:
    """recommend.Row objects from the engine's search rows (one shape, one mode)."""
    from ..engine import Record, Workload
    from ..recommend import Row

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
    from ..recommend import NoAnswer, Recommendation, recommend

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


# -- the fits map -------------------------------------------------------------------------
def fits_map_html(frame: pd.DataFrame, largest: pd.DataFrame | None) -> str:
    if "usable_bytes" not in frame or not frame.usable_bytes.notna().any():
        return ""
    batches = sorted(int(b) for b in frame.batch.dropna().unique())
    keys = ["impl_name", "dtype"] + (["device"] if "device" in frame else [])
    sections = []
    by_mode: dict[str, dict[tuple, list[dict]]] = {}
    for r in frame.to_dict("records"):
        by_mode.setdefault(r["mode"], {}).setdefault(tuple(r[k] for k in keys), []).append(r)
    for mode, cards_of in by_mode.items():
        cards = [_map_card(key, g, batches, largest, mode) for key, g in cards_of.items()]
        sections.append(f"<h3>{esc(MODE_TITLE.get(mode, mode))}</h3><div class='maps'>{''.join(cards)}</div>")
    scale = "".join(f"<span><span class='sw' style='background:{page.fits_colour(r)}'></span>{r:.0%}</span>"
                    for r in (0.1, 0.5, 0.75, 0.9, 1.0))
    return ("<h2 id='fits'>What fits: peak / usable memory</h2>"
            "<p class='sub'>Each cell is one workload of the grid: its peak (baseline included) as a share of the "
            "usable memory. <b>OOM</b>: out of memory on the target; · : skipped after an OOM at a smaller batch; "
            "<b>max</b>: the largest batch that fits, from the engine's search (not limited to the grid). Hover a "
            "cell for the bytes.</p>"
            f"<div class='legend-bar'>{scale}<span><span class='sw' style='background:#7f1d1d'></span>OOM</span>"
            "</div>" + "".join(sections))


def _map_card(key, g: list[dict], batches: list[int], largest, mode: str) -> str:
    impl, dtype, *dev = key
    title = f"{impl} · {dtype}" + (f" · {dev[0]}" if dev else "")
    shapes = sorted({(int(r["channels"]), int(r["tokens"]), r["resolution"]) for r in g})
    multi_c = len({c for c, _, _ in shapes}) > 1
    cells = {(int(r["channels"]), r["resolution"], int(r["batch"])): r for r in g}
    best = {}
    if largest is not None:
        lg = largest[(largest.impl_name == impl) & (largest.dtype == dtype) & (largest["mode"] == mode)]
        if dev:
            lg = lg[lg.device_name == dev[0]] if (lg.device_name == dev[0]).any() else lg.iloc[0:0]
        best = {(int(r["channels"]), r["resolution"]): r for r in lg.to_dict("records")}
    head = "".join(f"<th>{b}</th>" for b in batches) + "<th>max</th>"
    body = []
    for c, _, res in shapes:
        name = f"C={c} {res}" if multi_c else res
        tds = []
        for b in batches:
            r = cells.get((c, res, b))
            tds.append(_map_cell(r, f"{title} · {mode} · C={c} {res} · batch {b}"))
        lb = best.get((c, res))
        if lb is not None and lb["status"] == "error":
            tds.append(f"<td class='na' title='{esc(lb['message'])}'>?</td>")
        elif lb is not None and lb["max_batch"] == lb["max_batch"]:
            mb = int(lb["max_batch"])
            tip = (f"largest batch that fits (engine search): {mb}; peak there "
                   f"{format_bytes(int(lb['total_bytes']))}" if mb else "one image does not fit")
            tds.append(f"<td title='{esc(tip)}'><b>{mb if mb else '–'}</b></td>")
        else:
            tds.append("<td class='na'>?</td>")
        body.append(f"<tr><th class='s'>{esc(name)}</th>{''.join(tds)}</tr>")
    return (f"<div class='map'><h4>{esc(title)}</h4><table><thead><tr><th class='s' title='resolution \\ batch'>res</th>{head}</tr>"
            f"</thead><tbody>{''.join(body)}</tbody></table></div>")


def _map_cell(r, where: str) -> str:
    if r is None:
        return "<td class='na'></td>"
    status = r["status"]
    usable = r.get("usable_bytes")
    total = r.get("total_bytes")
    if status == "oom":
        need = f": needs {format_bytes(int(total))}" if total == total and total is not None else ""
        return f"<td class='oom' title='{esc(where + ' · out of memory' + need)}'>OOM</td>"
    if status == "skipped":
        return f"<td class='na' title='{esc(where + ' · ' + str(r.get('message', '')))}'>·</td>"
    if status != "ok" or total != total or not usable or usable != usable:
        return f"<td class='na' title='{esc(where + ' · ' + status + ': ' + str(r.get('message', '')))}'>n/a</td>"
    ratio = total / usable
    tip = f"{where} · {format_bytes(int(total))} of {format_bytes(int(usable))} usable ({ratio:.1%})"
    cls = " class='oom'" if ratio > 1 else ""
    text = "<1%" if ratio < 0.005 else f"{ratio * 100:.0f}%"
    return f"<td{cls} style='background:{page.fits_colour(ratio)}' title='{esc(tip)}'>{esc(text)}</td>"


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


# -- tables -------------------------------------------------------------------------------
def atlas_table(frame: pd.DataFrame) -> str:
    """Workloads down, one column per device: peak memory and time side by side (a sweep over
    several GPU kinds). Empty for a one-target table."""
    if "device" not in frame:
        return ""
    keys = ["impl", "options", "dtype", "mode", "channels", "height", "width", "batch"]
    frame = frame.assign(cell=[_atlas_cell(r) for r in frame.to_dict("records")])
    grid = frame.pivot_table(index=keys, columns="device", values="cell", aggfunc="first")
    devices = list(grid.columns)
    head = "".join(f"<th>{esc(k)}</th>" for k in keys) + "".join(f"<th>{esc(d)}</th>" for d in devices)
    body = []
    for idx, row in grid.iterrows():
        cells = "".join(f'<td class="s">{esc(v)}</td>' for v in idx)
        cells += "".join(f'<td>{esc(row[d]) if isinstance(row[d], str) else "-"}</td>' for d in devices)
        body.append(f"<tr>{cells}</tr>")
    return (f'<h2>Atlas: {len(devices)} devices</h2>\n<p>Peak memory over the baseline / time per step, by device.</p>\n'
            f'<table id="atlas"><thead><tr>{head}</tr></thead><tbody>\n' + "\n".join(body) + "\n</tbody></table>")


def _atlas_cell(row) -> str:
    if row["status"] != "ok":
        return str(row["status"])
    peak = "-" if row["peak_bytes"] != row["peak_bytes"] else format_bytes(int(row["peak_bytes"]))
    t = "" if row["time_s"] != row["time_s"] else f" / {row['time_s'] * 1e3:.3f} ms"
    return peak + t


TABLE_JS = r"""
function saRows(b){return Array.from(b.rows).filter(function(x){return !x.classList.contains('gh');});}
function saSort(id,col){var t=document.getElementById(id);
var asc=t.getAttribute('data-col')!=String(col)||t.getAttribute('data-dir')!='asc';
Array.from(t.tBodies).forEach(function(b){var r=saRows(b);r.sort(function(x,y){
var a=x.cells[col].getAttribute('data-v'),c=y.cells[col].getAttribute('data-v');var na=parseFloat(a),nc=parseFloat(c);
var v=(!isNaN(na)&&!isNaN(nc))?na-nc:a.localeCompare(c);return asc?v:-v;});r.forEach(function(x){b.appendChild(x);});});
t.setAttribute('data-col',col);t.setAttribute('data-dir',asc?'asc':'desc');}
function saFilter(id){var t=document.getElementById(id);var q=document.getElementById(id+'-q').value.toLowerCase()
.split(/\s+/).filter(Boolean);var st=document.getElementById(id+'-st').value;var shown=0;
Array.from(t.tBodies).forEach(function(b){var any=false;var g=(b.getAttribute('data-g')||'').toLowerCase();
saRows(b).forEach(function(r){var text=g+' '+r.textContent.toLowerCase();
var ok=q.every(function(w){return text.indexOf(w)>=0;})&&(!st||r.getAttribute('data-st')==st);
r.style.display=ok?'':'none';if(ok){any=true;shown++;}});b.style.display=any?'':'none';});
document.getElementById(id+'-n').textContent=shown;}
function saToggle(b){b.classList.toggle('closed');}
"""

TABLE_STYLE = """
.msg{max-width:340px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
tr.gh th{background:#e8eef5;text-align:left;cursor:pointer;font-weight:600}tr.gh th span{font-weight:400;color:#555}
tbody.closed tr:not(.gh){display:none}#rows thead th{cursor:pointer}.filters{margin:8px 0;font-size:13px}
.filters input{width:320px;padding:3px 6px}
"""

COLUMNS = [("batch", "batch"), ("status", "status"), ("backend", "backend"), ("total_bytes", "peak"),
           ("share", "of usable"), ("time_s", "time / step"), ("per_image", "time / image"), ("source", "source"),
           ("message", "message")]


def rows_table(frame: pd.DataFrame, largest: pd.DataFrame | None = None, table_id: str = "rows") -> str:
    cols = [(c, h) for c, h in COLUMNS if c in frame or c in ("share", "per_image")]
    head = "".join(f'<th onclick="saSort(\'{table_id}\',{i})"{" class=s" if c in ("status", "backend", "source", "message") else ""}>'
                   f'{esc(h)}</th>' for i, (c, h) in enumerate(cols))
    best = {}
    if largest is not None:
        for r in largest.to_dict("records"):
            best[(r["impl_name"], r["dtype"], r["mode"], int(r["channels"]), r["resolution"], str(r["target"]))] = r
    groups = []
    keys = ["label", "channels", "resolution"] + (["target"] if "target" in frame else [])
    by_key: dict[tuple, list[dict]] = {}
    for r in frame.to_dict("records"):
        by_key.setdefault(tuple(r[k] for k in keys), []).append(r)
    for g in by_key.values():
        first = g[0]
        name = f"{first['label']} · C={int(first['channels'])} · {first['resolution']}"
        counts = ", ".join(f"{v} {k}" for k, v in Counter(r["status"] for r in g).most_common())
        lb = best.get((first["impl_name"], first["dtype"], first["mode"], int(first["channels"]), first["resolution"],
                       str(first.get("target", ""))))
        extra = f" · largest batch (engine search) {int(lb['max_batch'])}" if lb is not None and lb["max_batch"] == lb["max_batch"] else ""
        rows = []
        for r in sorted(g, key=lambda r: r["batch"]):
            rows.append(f"<tr data-st='{esc(r['status'])}'>" + "".join(_cell(c, r) for c, _ in cols) + "</tr>")
        groups.append(f"<tbody data-g='{esc(name)}'><tr class='gh' onclick='saToggle(this.parentNode)'>"
                      f"<th colspan='{len(cols)}'>{esc(name)} <span>({esc(counts)}{esc(extra)})</span></th></tr>"
                      + "".join(rows) + "</tbody>")
    statuses = "".join(f"<option value='{esc(s)}'>{esc(s)}</option>" for s in dict.fromkeys(frame.status))
    return (f"<div class='filters'>Filter: <input id='{table_id}-q' placeholder='e.g. sdpa float16 train 256x256' "
            f"oninput=\"saFilter('{table_id}')\"> status <select id='{table_id}-st' onchange=\"saFilter('{table_id}')\">"
            f"<option value=''>any</option>{statuses}</select> · <span id='{table_id}-n'>{len(frame)}</span> rows shown · "
            "click a column to sort within each configuration, a configuration to fold it</div>"
            f"<table id='{table_id}'><thead><tr>{head}</tr></thead>" + "".join(groups) + "</table>")


def _cell(col: str, r: dict) -> str:
    value = r.get(col)
    if col == "share":
        total, usable = r.get("total_bytes"), r.get("usable_bytes")
        if total == total and total is not None and usable == usable and usable:
            return f"<td data-v='{total / usable}'>{total / usable:.0%}</td>"
        return "<td data-v=''>-</td>"
    if col == "per_image":
        t = r.get("time_s")
        if t == t and t is not None and r.get("status") == "ok":
            return f"<td data-v='{t / r['batch']}'>{esc(format_seconds(t / r['batch']))}</td>"
        return "<td data-v=''>-</td>"
    if value is None or (isinstance(value, float) and value != value) or value == "":
        return "<td data-v=''>-</td>"
    if col == "total_bytes":
        return f"<td data-v='{int(value)}'>{esc(format_bytes(int(value)))}</td>"
    if col == "time_s":
        return f"<td data-v='{float(value)}'>{esc(format_seconds(float(value)))}</td>"
    if col == "batch":
        return f"<td data-v='{int(value)}'>{int(value)}</td>"
    text = str(value)
    if col == "message":
        line = text.strip().splitlines()[0] if text.strip() else ""
        return f"<td class='s msg' data-v='{esc(line)}' title='{esc(text)}'>{esc(line)}</td>"
    return f"<td class='s' data-v='{esc(text)}'>{esc(text)}</td>"


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
    """The report of a sweep's results.csv (with meta.json and largest.csv beside it);
    `on_note(text)` hears about duplicate rows."""
    results_csv = Path(results_csv)
    if meta is None:
        meta_path = results_csv.with_name("meta.json")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta = {**meta, "results": str(results_csv)}
    frame = load(results_csv)
    for note in frame.attrs.get("notes", []) if on_note else ():
        on_note(note)
    return write_html(frame, out or results_csv.with_name("report.html"), meta,
                      load_largest(results_csv.parent, frame))


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
        meta_path = self.folder / "meta.json"
        self.meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        self.meta["results"] = str(path)
        self.frame = load(path)
        self.notes = self.frame.attrs.get("notes", [])
        self.largest = load_largest(self.folder, self.frame)

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
    """`open_sweep("reports/forum-t4")`: a finished (or interrupted) sweep, ready to look at."""
    return SweepResult(folder)
