"""The sweep report's tables: the fits map (resolution x batch cells per implementation and
dtype), the atlas and every row, sortable and filterable."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from sa_profiler.units import format_bytes, format_seconds
from sa_profiler.report import page
from sa_profiler.report.page import esc
from sa_profiler.report.sweep_frame import MODE_TITLE


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
