"""What the sweep report says, cell by cell, on small hand-made results whose numbers are known:
shares of the usable memory, times per image, the largest batches, the recommendation and its
derivation, and that every string from the data is escaped."""

import json
import math

import pandas as pd
import pytest

from sa_profiler.engine import timing
from sa_profiler.report import html as H
from sa_profiler.report import page

USABLE = 10_000
T = f"{timing.typical_factor():.2f}"


def result(impl="reference", options="{}", batch=1, res=8, peak=1000, base=500, time_s=0.004, status="ok",
           message="", mode="train", dtype="float16", channels=16, target="t4", device="Tesla T4", usable=USABLE,
           source="simulated", backend=""):
    return {"impl": impl, "batch": batch, "channels": channels, "height": res, "width": res, "dtype": dtype,
            "mode": mode, "target": target, "options": options, "tokens": res * res,
            "key": f"{impl}|{options}|{batch}|{channels}|{res}|{dtype}|{mode}|{target}|{source}",
            "peak_bytes": peak, "baseline_bytes": base, "time_s": time_s, "time_method": "estimate",
            "status": status, "message": message, "source": source, "backend": backend, "device_name": device,
            "host": "h", "top_tensors": "[]", "usable_bytes": usable}


FLASH = '{"backend": "flash"}'
ROWS = [
    result(batch=1, res=8, peak=1000, time_s=0.004),  # 1500 of 10000: 15%
    result(batch=4, res=8, peak=4000, time_s=0.008),  # 4500: 45%
    result(batch=1, res=16, peak=9000, time_s=0.02),  # 9500: 95%
    result(batch=4, res=16, peak=37500, time_s=None, status="oom", message="out of memory"),  # 38000
    result("sdpa", FLASH, 1, 8, 200, time_s=0.001, backend="flash"),  # 700: 7%
    result("sdpa", FLASH, 4, 8, 600, time_s=0.002, backend="flash"),  # 1100: 11%
    result("sdpa", FLASH, 1, 16, 800, time_s=0.003, backend="flash"),  # 1300: 13%
    result("sdpa", FLASH, 4, 16, 2400, time_s=0.006, backend="flash"),  # 2900: 29%
]


def frame(rows=ROWS):
    return H.prepare(pd.DataFrame(rows))


# -- preparing the results ---------------------------------------------------------------------
def test_prepare_totals_labels_and_names():
    f = frame()
    assert f.total_bytes.tolist() == [1500, 4500, 9500, 38000, 700, 1100, 1300, 2900]
    assert not {"top_tensors", "host", "time_method"} & set(f.columns)
    assert f.label.tolist()[::4] == ["reference float16 train", "sdpa[backend=flash] float16 train"]
    assert f.impl_name.tolist()[::4] == ["reference", "sdpa:flash"]
    assert f.resolution.tolist()[:4] == ["8x8", "8x8", "16x16", "16x16"]
    assert "device" not in f


def test_prepare_types_and_missing_values():
    rows = [dict(result(), peak_bytes="1000", baseline_bytes=None, message=None, options=None, backend=float("nan"),
                 height=8, width=16, usable_bytes="10000")]
    f = H.prepare(pd.DataFrame(rows))
    assert f.total_bytes.tolist() == [1000] and f.peak_bytes.dtype.kind in "if"
    assert f.usable_bytes.tolist() == [10000]
    assert (f.message.tolist(), f.options.tolist(), f.backend.tolist()) == ([""], [""], [""])
    assert f.resolution.tolist() == ["8x16"] and f.label.tolist() == ["reference float16 train"]
    given = H.prepare(pd.DataFrame([dict(result(), total_bytes=77)]))
    assert given.total_bytes.tolist() == [77]  # a total the results carry is kept
    empty = H.prepare(pd.DataFrame([dict(result(), total_bytes=float("nan"))]))
    assert empty.total_bytes.tolist() == [1500]


def test_labels_and_implementation_names():
    opts = [("{}", "reference float16 train", "reference"),
            ('{"chunk": 512, "checkpoint": true}', "reference[checkpoint=True] float16 train", "reference"),
            ('{"backend": "efficient", "layout": "split"}', "reference[backend=efficient,layout=split] float16 train",
             "reference:efficient split"),
            ('{"pool": 4}', "reference[pool=4] float16 train", "reference 4x4"),
            ("{not json", "reference[options={not json] float16 train", "reference")]
    for options, label, name in opts:
        row = {"impl": "reference", "options": options, "dtype": "float16", "mode": "train"}
        assert (H._label(row), H._impl_name(row)) == (label, name)
    assert H._options({"options": ""}) == {} and H._options({}) == {} and H._options({"options": 3}) == {}


def test_an_atlas_names_the_device():
    rows = [result(), result(target="h100", device=""), result(target="a100", device=float("nan"))]
    f = H.prepare(pd.DataFrame(rows))
    assert f.device.tolist() == ["Tesla T4", "h100", "a100"]
    assert f.label.tolist() == ["reference float16 train @ Tesla T4", "reference float16 train @ h100",
                                "reference float16 train @ a100"]


def test_load_keeps_the_last_of_repeated_rows(tmp_path):
    rows = ROWS[:2] + [dict(ROWS[0], peak_bytes=1234)]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    f = H.load(tmp_path / "results.csv")
    assert sorted(f.total_bytes.tolist()) == [1734, 4500]
    assert f.attrs["notes"] == [f"{tmp_path / 'results.csv'} had 1 duplicate row (a workload written more than "
                                "once); the last row of each workload is used (2 workloads)"]
    pd.DataFrame(ROWS).to_csv(tmp_path / "r2.csv", index=False)
    assert H.load(tmp_path / "r2.csv").attrs["notes"] == []


# -- largest.csv and the answer --------------------------------------------------------------------
def largest_row(impl="reference", options="{}", res=8, max_batch=6, per=1500, total=9500, time_s=0.03, status="ok",
                message="", mode="train", dtype="float16", channels=16, target="t4", device="Tesla T4",
                backend=""):
    return {"target": target, "device_name": device, "impl": impl, "options": options, "dtype": dtype, "mode": mode,
            "channels": channels, "height": res, "width": res, "tokens": res * res, "status": status,
            "message": message, "backend": backend, "per_image_bytes": per, "max_batch": max_batch,
            "total_bytes": total, "time_s": time_s, "usable_bytes": USABLE, "source": "simulated"}


LARGEST = [
    largest_row(res=8, max_batch=6, per=1500, total=9500, time_s=0.03),
    largest_row(res=16, max_batch=1, per=9500, total=9500, time_s=0.02),
    largest_row("sdpa", FLASH, 8, 24, 700, 9900, 0.024, backend="flash"),
    largest_row("sdpa", FLASH, 16, 12, 1300, 9700, 0.036, backend="flash"),
]


def largest(tmp_path, rows=LARGEST):
    pd.DataFrame(rows).to_csv(tmp_path / "largest.csv", index=False)
    return H.load_largest(tmp_path)


def test_load_largest(tmp_path):
    lg = largest(tmp_path)
    assert lg.impl_name.tolist() == ["reference", "reference", "sdpa:flash", "sdpa:flash"]
    assert lg.resolution.tolist() == ["8x8", "16x16", "8x8", "16x16"]
    assert lg.max_batch.tolist() == [6, 1, 24, 12] and lg.message.tolist() == ["", "", "", ""]
    assert H.load_largest(tmp_path / "none") is None  # no largest.csv, no results to search


def test_the_largest_batch_is_searched_when_missing_and_the_report_only_reads(tmp_path):
    from sa_profiler.sweeps.largest import ensure

    pd.DataFrame([result(usable=10**9)]).to_csv(tmp_path / "results.csv", index=False)
    assert H.load_largest(tmp_path) is None  # the view reads answers; it never searches
    assert ensure(tmp_path) == tmp_path / "largest.csv"
    lg = H.load_largest(tmp_path)
    assert len(lg) == 1 and lg.max_batch.iloc[0] > 1
    (tmp_path / "x").mkdir()
    pd.DataFrame([result(usable=None)]).to_csv(tmp_path / "x" / "results.csv", index=False)
    assert ensure(tmp_path / "x") is None and H.load_largest(tmp_path / "x") is None


def test_rows_of_the_search(tmp_path):
    rows = LARGEST[:2] + [largest_row(res=32, max_batch=float("nan"), per=float("nan"), total=float("nan"),
                                      status="oom"),
                          largest_row(impl="nonsense"), largest_row(res=16, max_batch=0, status="oom", total=0)]
    got = H._rows_of(largest(tmp_path, rows))
    assert len(got) == 4  # the unknown implementation is left out
    a, b, c, d = got
    assert (a.max_batch, a.batch, a.fits, a.per_image.peak_bytes, a.at_batch.peak_bytes, a.at_batch.time_s) == \
        (6, 6, True, 1500, 9500, 0.03)
    assert a.at_batch.workload.batch == 6 and a.per_image.workload.batch == 1 and a.per_image.status == "ok"
    assert a.time_per_image == 0.005 and (a.status, a.mode, a.dtype) == ("ok", "train", "float16")
    assert (c.max_batch, c.fits, c.per_image.peak_bytes, c.per_image.status, c.at_batch, c.status) == \
        (0, False, None, "oom", None, "ok")
    assert (d.max_batch, d.fits, d.at_batch) == (0, False, None)
    assert b.per_image.workload.height == 16 and b.per_image.workload.target == "t4"
    assert (b.max_batch, b.fits) == (1, True)


def test_recommendations_per_target_and_mode(tmp_path):
    rows = LARGEST + [largest_row(res=8, mode="forward", max_batch=9), largest_row(channels=32, res=16, max_batch=2),
                      largest_row(target="h100", device="", res=8, max_batch=80)]
    recs = H.recommendations(largest(tmp_path, rows))
    assert [(r["target"], r["device"], r["mode"], r["usable"]) for r in recs] == [
        ("t4", "Tesla T4", "train", USABLE), ("t4", "Tesla T4", "forward", USABLE), ("h100", "h100", "train", USABLE)]
    shapes = [(int(s["channels"]), int(s["height"])) for s, _, _ in recs[0]["shapes"]]
    assert shapes == [(16, 8), (16, 16), (32, 16)]  # by tokens, then channels: the largest map last
    s, rows16, rec = recs[0]["shapes"][1]
    assert len(rows16) == 2 and rec.row.impl == "sdpa"  # fastest per image: 0.036 / 12 < 0.02 / 1
    assert H.recommendations(None) == [] and H.recommendations(largest(tmp_path).iloc[0:0]) == []


def test_derivation():
    meta = {"target": {"key": "t4", "total_memory": 16 * 2**30, "context_bytes": 2**29, "headroom_bytes": 2**30}}
    assert H._derivation(meta, "t4", 14 * 2**30 + 2**29) == (
        "usable memory = 16.00 GiB (the card, as torch reports it) − 512.00 MiB (CUDA context and library handles, "
        "which max_memory_allocated does not count) − 1.00 GiB (headroom: what the simulator does not model, chiefly "
        "cuDNN convolution workspaces) = <b>14.50 GiB</b>")
    short = {"targets": [{"key": "a", "total_memory": 2**30}, {"key": "b", "total_memory": 4 * 2**30}]}
    assert H._derivation(short, "b", 3 * 2**30) == \
        "usable memory = 4.00 GiB (the card) − 1.00 GiB (CUDA context and headroom) = <b>3.00 GiB</b>"
    assert H._derivation(short, "zz", 2**29).startswith("usable memory = 1.00 GiB (the card) − 512.00 MiB")
    assert H._derivation({}, "t4", 2**20) == "usable memory 1.00 MiB"
    assert H._derivation({"targets": []}, "t4", 2**20) == "usable memory 1.00 MiB"


def test_the_answer(tmp_path):
    recs = H.recommendations(largest(tmp_path))
    meta = {"target": {"key": "t4", "total_memory": 30_000, "context_bytes": 10_000, "headroom_bytes": 10_000}}
    got = H.answer_html(recs, meta)
    assert got.startswith("<div class='answer'><h3>Training (forward + backward) at 16 x 16 x 16 (N = 256, the "
                          "largest map of the sweep) on Tesla T4</h3>")
    assert ("<div class='rec'><span class=\"what\"><b>sdpa</b> (flash) in <b>float16</b>, batch <b>12</b></span> — "
            "peak 9.47 KiB of 9.77 KiB (97%), 3.00 ms per image (estimate)<br>change: <code class=\"code\">"
            "convert(model, &quot;sdpa&quot;, backend=&#x27;flash&#x27;)</code></div>") in got
    assert ("<div class='muted'>The classic layer (reference): 9.28 KiB for one image; largest batch 1 "
            "(float16).</div>") in got
    assert ("<details><summary>Smaller maps of the sweep</summary><table><thead><tr><th class='s'>C x H x W</th>"
            "<th class='s'>use</th><th>batch</th><th class='s'>change</th></tr></thead><tbody><tr><td class='s'>"
            "16x8x8</td><td class='s'>sdpa (flash) float16</td><td>24</td><td class='s'><code>convert(model, "
            "&quot;sdpa&quot;, backend=&#x27;flash&#x27;)</code></td></tr></tbody></table></details>") in got
    assert ("<div class='derive'>usable memory = 29.30 KiB (the card, as torch reports it) − 9.77 KiB (CUDA context "
            "and library handles, which max_memory_allocated does not count) − 9.77 KiB (headroom: what the "
            "simulator does not model, chiefly cuDNN convolution workspaces) = <b>9.77 KiB</b>. Batches come from "
            "the engine's search (on the simulator under that memory), not from the grid.</div>") in got
    assert got.endswith("</div></div>")
    assert H.answer_html([], {}) == ("<div class=\"answer none\"><h3>No recommendation</h3>The results carry no usable "
                                     "memory to search against.</div>")


def test_the_answer_when_nothing_fits(tmp_path):
    rows = [largest_row(res=8, max_batch=0, per=20_000, total=0, status="oom"),
            largest_row(res=16, max_batch=0, per=80_000, total=0, status="oom"),
            largest_row(res=16, dtype="float32", max_batch=0, per=90_000, total=0, status="oom")]
    got = H.answer_html(H.recommendations(largest(tmp_path, rows)), {})
    assert got.startswith("<div class='answer none'><h3>")
    assert ("<div class='rec'><b>Nothing exact fits even one image</b>: no exact implementation fits even one "
            "image.</div>") in got
    assert "The classic layer" not in got
    assert ("<tr><td class='s'>16x8x8</td><td class='s' colspan='3'>nothing fits</td></tr>") in got


def test_the_classic_layer_beside_the_answer(tmp_path):
    rows = LARGEST + [largest_row(res=16, dtype="float32", max_batch=0, per=19_000, total=0, status="oom")]
    got = H.answer_html(H.recommendations(largest(tmp_path, rows)), {})
    assert ("<div class='muted'>The classic layer (reference): 9.28 KiB–18.55 KiB for one image; largest batch 1 "
            "(float16).</div>") in got
    rows = LARGEST[2:] + [largest_row(res=16, max_batch=0, per=19_000, total=0, status="oom")]
    got = H.answer_html(H.recommendations(largest(tmp_path, rows)), {})
    assert "The classic layer (reference): 18.55 KiB for one image; does not fit one image.</div>" in got


def test_rec_line_without_peak_or_time(tmp_path):
    recs = H.recommendations(largest(tmp_path, [largest_row("sdpa", "{}", 16, 3, 700, 900, float("nan"))]))
    rec = recs[0]["shapes"][-1][2]
    assert H._rec_line(rec, 1000) == ('<span class="what"><b>sdpa (auto)</b> (bmm) in <b>float16</b>, batch <b>3</b>'
                                      '</span> — peak 900 B of 1000 B (90%)<br>change: <code class="code">'
                                      'convert(model, &quot;sdpa&quot;)</code>')


# -- the fits map ----------------------------------------------------------------------------
def test_map_cells():
    where = "w<"
    assert H._map_cell(None, where) == "<td class='na'></td>"
    ok = {"status": "ok", "usable_bytes": 10000, "total_bytes": 1500}
    assert H._map_cell(ok, where) == (f"<td style='background:{page.fits_colour(0.15)}' title='w&lt; · 1.46 KiB of "
                                      "9.77 KiB usable (15.0%)'>15%</td>")
    assert page.fits_colour(0.15) == "hsl(102,70%,80%)"
    over = dict(ok, total_bytes=12000)
    assert H._map_cell(over, where).startswith("<td class='oom' style='background:hsl(0,70%,72%)' title='w&lt; · "
                                               "11.72 KiB of 9.77 KiB usable (120.0%)'>120%</td>")
    tiny = dict(ok, total_bytes=49)
    assert H._map_cell(tiny, where).endswith(">&lt;1%</td>")
    assert H._map_cell(dict(ok, total_bytes=50), where).endswith(">0%</td>")  # 0.5 %: no longer "<1%"
    assert H._map_cell({"status": "oom", "usable_bytes": 1, "total_bytes": 38000}, where) == \
        "<td class='oom' title='w&lt; · out of memory: needs 37.11 KiB'>OOM</td>"
    assert H._map_cell({"status": "oom", "usable_bytes": 1, "total_bytes": float("nan")}, where) == \
        "<td class='oom' title='w&lt; · out of memory'>OOM</td>"
    assert H._map_cell({"status": "oom", "usable_bytes": 1, "total_bytes": None}, where) == \
        "<td class='oom' title='w&lt; · out of memory'>OOM</td>"
    assert H._map_cell({"status": "skipped", "message": "after <OOM>"}, where) == \
        "<td class='na' title='w&lt; · after &lt;OOM&gt;'>·</td>"
    assert H._map_cell({"status": "error", "message": "bad", "usable_bytes": 1, "total_bytes": 1}, where) == \
        "<td class='na' title='w&lt; · error: bad'>n/a</td>"
    for missing in ({"total_bytes": float("nan")}, {"usable_bytes": float("nan")}, {"usable_bytes": 0}):
        assert H._map_cell({**ok, **missing}, where) == "<td class='na' title='w&lt; · ok: '>n/a</td>"


def test_map_card(tmp_path):
    f = frame()
    lg = largest(tmp_path)
    g = [r for r in f.to_dict("records") if r["impl_name"] == "reference"]
    card = H._map_card(("reference", "float16"), g, [1, 4], lg, "train")
    assert card.startswith("<div class='map'><h4>reference · float16</h4><table><thead><tr><th class='s' "
                           "title='resolution \\ batch'>res</th><th>1</th><th>4</th><th>max</th></tr></thead><tbody>")
    assert "<tr><th class='s'>8x8</th><td style='background:hsl(102,70%,80%)' title='reference · float16 · train · " \
           "C=16 8x8 · batch 1 · 1.46 KiB of 9.77 KiB usable (15.0%)'>15%</td>" in card
    assert "<td title='largest batch that fits (engine search): 6; peak there 9.28 KiB'><b>6</b></td></tr>" in card
    assert "title='reference · float16 · train · C=16 16x16 · batch 4 · out of memory: needs 37.11 KiB'>OOM</td>" \
        in card
    assert card.index(">8x8<") < card.index(">16x16<")
    none = H._map_card(("reference", "float16"), g, [1, 4], None, "train")
    assert none.count("<td class='na'>?</td>") == 2
    other_mode = H._map_card(("reference", "float16"), g, [1, 4], lg, "forward")
    assert other_mode.count("<td class='na'>?</td>") == 2
    lg2 = largest(tmp_path, [largest_row(res=8, max_batch=0, total=0, status="oom"),
                             largest_row(res=16, status="error", message="it <broke>", max_batch=float("nan"))])
    card2 = H._map_card(("reference", "float16"), g, [1, 2, 4], lg2, "train")
    assert "<td title='one image does not fit'><b>–</b></td>" in card2
    assert "<td class='na' title='it &lt;broke&gt;'>?</td>" in card2
    assert "<th>2</th>" in card2 and card2.count("<td class='na'></td>") == 2  # no batch-2 cells


def test_map_card_with_channels_and_devices(tmp_path):
    rows = [result(channels=16), result(channels=32, peak=2000)]
    f = frame(rows)
    card = H._map_card(("reference", "float16"), f.to_dict("records"), [1], None, "train")
    assert "<th class='s'>C=16 8x8</th>" in card and "<th class='s'>C=32 8x8</th>" in card
    rows = [result(), result(target="h100", device="H100", peak=3000)]
    f = frame(rows)
    lg = largest(tmp_path, [largest_row(max_batch=5), largest_row(target="h100", device="H100", max_batch=50,
                                                                  total=9000)])
    cards = {r["device"] for r in f.to_dict("records")}
    assert cards == {"Tesla T4", "H100"}
    g = [r for r in f.to_dict("records") if r["device"] == "H100"]
    card = H._map_card(("reference", "float16", "H100"), g, [1], lg, "train")
    assert card.startswith("<div class='map'><h4>reference · float16 · H100</h4>")
    assert "<b>50</b>" in card and "<b>5</b>" not in card
    card = H._map_card(("reference", "float16", "A100"), g, [1], lg, "train")
    assert "<td class='na'>?</td>" in card


def test_fits_map(tmp_path):
    got = H.fits_map_html(frame(), largest(tmp_path))
    assert got.startswith("<h2 id='fits'>What fits: peak / usable memory</h2>")
    assert "<h3>Training (forward + backward)</h3><div class='maps'><div class='map'><h4>reference · float16</h4>" \
        in got
    assert "<h4>sdpa:flash · float16</h4>" in got
    assert ("<div class='legend-bar'><span><span class='sw' style='background:hsl(108,70%,81%)'></span>10%</span>"
            "<span><span class='sw' style='background:hsl(60,70%,77%)'></span>50%</span>") in got
    assert "<span><span class='sw' style='background:hsl(0,70%,72%)'></span>100%</span>" in got
    assert "<span class='sw' style='background:#7f1d1d'></span>OOM</span></div>" in got
    assert H.fits_map_html(frame([result(usable=None)]), None) == ""
    modes = H.fits_map_html(frame(ROWS + [result(mode="forward")]), None)
    assert modes.index("<h3>Training") < modes.index("<h3>Inference (forward, no_grad)</h3>")
    odd = H.fits_map_html(frame([dict(result(), mode="<m>")]), None)
    assert "<h3>&lt;m&gt;</h3>" in odd


# -- the plots -------------------------------------------------------------------------------
def traces(fig):
    return [t for t in fig["data"] if t.get("showlegend") is False and "xaxis" in t and t["mode"] == "lines+markers"]


def test_memory_figure():
    fig = H.memory_figure(frame(), USABLE)
    assert fig["layout"]["title"]["text"] == ("Peak memory vs tokens at batch 1 (baseline included; × : out of "
                                              "memory on the target)")
    lines = {t["name"]: (t["x"], t["y"]) for t in traces(fig)}
    assert lines == {"reference": ([64, 256], [1500, 9500]), "sdpa:flash": ([64, 256], [700, 1300])}
    guides = [t for t in fig["data"] if t.get("mode") == "lines+text"]
    assert [(t["x"], t["y"], t["text"]) for t in guides] == [([64, 256], [700, 2800.0], ["", "∝ N"]),
                                                             ([64, 256], [700, 11200.0], ["", "∝ N²"])]
    assert [s["y0"] for s in fig["layout"]["shapes"]] == [USABLE]
    assert fig["layout"]["annotations"][-1]["text"] == "usable 9.77 KiB"
    assert fig["layout"]["annotations"][-1]["y"] == pytest.approx(4.0)
    hover = next(t for t in traces(fig) if t["name"] == "reference")["text"]
    assert hover == ["reference float16 train C=16 8x8 B=1<br>peak 1.46 KiB",
                     "reference float16 train C=16 16x16 B=1<br>peak 9.28 KiB"]
    oom = H.memory_figure(frame([result(), result(res=16, status="oom", peak=20000)]), USABLE)
    t = traces(oom)[0]
    assert t["y"] == [1500, 20500] and t["marker"]["symbol"] == ["circle", "x-thin-open"]
    assert t["text"][1].endswith("<br>out of memory: would need 20.02 KiB")
    assert H.memory_figure(frame([result(status="error", peak=None, base=None)]), USABLE) is None


def test_time_figure():
    fig = H.time_figure(frame())
    assert fig["layout"]["title"]["text"] == f"Time per image vs tokens at batch 1 (estimated, typical error x{T})"
    lines = {t["name"]: (t["x"], t["y"]) for t in traces(fig)}
    assert lines == {"reference": ([64, 256], [0.004, 0.02]), "sdpa:flash": ([64, 256], [0.001, 0.003])}
    b4 = H.time_figure(frame([r for r in ROWS if r["batch"] == 4 and r["status"] == "ok"]))
    assert {t["name"]: t["y"] for t in traces(b4)} == {"reference": [0.002], "sdpa:flash": [0.0005, 0.0015]}
    assert b4["layout"]["title"]["text"].startswith("Time per image vs tokens at batch 4 (")
    measured = H.time_figure(frame([dict(r, source="measured") for r in ROWS]))
    assert measured["layout"]["title"]["text"] == "Time per image vs tokens at batch 1 (measured)"
    assert next(t for t in traces(fig) if t["name"] == "sdpa:flash")["text"][0] == \
        "sdpa:flash float16 train C=16 8x8<br>1.00 ms per image"
    assert H.time_figure(frame([result(time_s=None)])) is None


def test_batch_figure(tmp_path):
    f = frame()
    lg = largest(tmp_path, LARGEST + [largest_row(res=32, max_batch=0, total=0, status="oom")])
    fig = H.batch_figure(f, lg, USABLE)
    assert {t["name"]: (t["x"], t["y"]) for t in traces(fig)} == {
        "reference": (["8x8", "16x16", "32x32"], [6, 1, None]), "sdpa:flash": (["8x8", "16x16"], [24, 12])}
    assert fig["layout"]["yaxis"]["range"] == [-0.1, pytest.approx(math.log10(48))]
    assert [s["y0"] for s in fig["layout"]["shapes"]] == [4]
    assert any(a["text"] == "grid's largest batch (4)" for a in fig["layout"]["annotations"])
    assert fig["layout"]["xaxis"]["categoryarray"] == ["8x8", "16x16", "32x32"]
    hover = next(t for t in traces(fig) if t["name"] == "reference")["text"]
    assert hover == ["reference float16 train C=16 8x8<br>largest batch 6, peak 9.28 KiB",
                     "reference float16 train C=16 16x16<br>largest batch 1, peak 9.28 KiB",
                     "reference float16 train C=16 32x32<br>largest batch 0: one image does not fit"]
    assert H.batch_figure(f, None) is None and H.batch_figure(f, lg.iloc[0:0]) is None
    assert H.batch_figure(f, lg[lg.max_batch == 0]) is None
    wide = H.batch_figure(frame([dict(r, batch=100) for r in ROWS[:1]]), lg, USABLE)
    assert wide["layout"]["yaxis"]["range"] == [-0.1, pytest.approx(math.log10(200))]


def test_comparison_figure():
    sim = [result(batch=b, res=8, peak=p) for b, p in ((1, 1100), (4, 4000))]
    meas = [result(batch=b, res=8, peak=p, source="measured") for b, p in ((1, 1000), (4, 5000))]
    fig = H.comparison_figure(frame(sim + meas))
    first = fig["data"][0]
    assert (first["x"], first["y"]) == ([1000, 5000], [1100, 4000])
    assert first["text"] == ["reference float16 train: +10.00%", "reference float16 train: -20.00%"]
    assert fig["layout"]["title"]["text"] == "Simulated vs measured peak (worst error 20.00%, median 15.00%)"
    assert fig["data"][1]["x"] == [1000, 5000] and fig["data"][1]["y"] == [1000, 5000]
    assert H.comparison_figure(frame(sim)) is None
    assert H.comparison_figure(frame(sim + [result(batch=2, source="measured")])) is None


def test_usable_lines():
    f = frame()
    assert H._usable_lines(f, 123) == {"": 123}
    assert H._usable_lines(f, None) == {"": USABLE}
    assert H._usable_lines(frame([result(usable=None)]), None) == {}
    atlas = frame([result(), result(target="h100", device="H100", usable=80_000)])
    assert H._usable_lines(atlas, 5) == {"H100": 80_000, "Tesla T4": USABLE}


def test_figures_of_a_page(tmp_path):
    f = frame()
    figs = H.figures(f, {}, largest(tmp_path))
    assert [fig["layout"]["title"]["text"].split(" ")[0] for fig in figs] == ["Peak", "Time", "Largest"]
    assert H.figures(f, {"target": {"usable_bytes": 4321}}, None)[0]["layout"]["shapes"][0]["y0"] == 4321


# -- the table ---------------------------------------------------------------------------------
def test_cells():
    r = {"total_bytes": 4500, "usable_bytes": 10000, "time_s": 0.008, "batch": 4, "status": "ok",
         "message": "first line\nsecond <line>", "backend": "<b>", "source": float("nan")}
    assert H._cell("share", r) == "<td data-v='0.45'>45%</td>"
    assert H._cell("per_image", r) == "<td data-v='0.002'>2.00 ms</td>"
    assert H._cell("total_bytes", r) == "<td data-v='4500'>4.39 KiB</td>"
    assert H._cell("time_s", r) == "<td data-v='0.008'>8.00 ms</td>"
    assert H._cell("batch", dict(r, batch=4.0)) == "<td data-v='4'>4</td>"
    assert H._cell("message", r) == ("<td class='s msg' data-v='first line' title='first line\nsecond &lt;line&gt;'>"
                                     "first line</td>")
    assert H._cell("message", dict(r, message="  ")) == "<td class='s msg' data-v='' title='  '></td>"
    assert H._cell("backend", r) == "<td class='s' data-v='&lt;b&gt;'>&lt;b&gt;</td>"
    dash = "<td data-v=''>-</td>"
    assert H._cell("source", r) == dash and H._cell("status", dict(r, status="")) == dash
    assert H._cell("status", dict(r, status=None)) == dash
    assert H._cell("share", dict(r, usable_bytes=float("nan"))) == dash
    assert H._cell("share", dict(r, usable_bytes=0)) == dash
    assert H._cell("share", dict(r, total_bytes=float("nan"))) == dash
    assert H._cell("share", dict(r, total_bytes=None)) == dash
    assert H._cell("per_image", dict(r, status="oom")) == dash
    assert H._cell("per_image", dict(r, time_s=float("nan"))) == dash
    assert H._cell("per_image", dict(r, time_s=None)) == dash


def test_rows_table(tmp_path):
    got = H.rows_table(frame(), largest(tmp_path))
    assert got.startswith("<div class='filters'>Filter: <input id='rows-q' placeholder='e.g. sdpa float16 train "
                          "256x256' oninput=\"saFilter('rows')\"> status <select id='rows-st' "
                          "onchange=\"saFilter('rows')\"><option value=''>any</option><option value='ok'>ok</option>"
                          "<option value='oom'>oom</option></select> · <span id='rows-n'>8</span> rows shown")
    head = got.split("<thead><tr>", 1)[1].split("</tr></thead>", 1)[0]
    assert head == ("<th onclick=\"saSort('rows',0)\">batch</th><th onclick=\"saSort('rows',1)\" class=s>status</th>"
                    "<th onclick=\"saSort('rows',2)\" class=s>backend</th><th onclick=\"saSort('rows',3)\">peak</th>"
                    "<th onclick=\"saSort('rows',4)\">of usable</th><th onclick=\"saSort('rows',5)\">time / step</th>"
                    "<th onclick=\"saSort('rows',6)\">time / image</th><th onclick=\"saSort('rows',7)\" class=s>"
                    "source</th><th onclick=\"saSort('rows',8)\" class=s>message</th>")
    assert ("<tbody data-g='reference float16 train · C=16 · 16x16'><tr class='gh' onclick='saToggle(this.parentNode)'>"
            "<th colspan='9'>reference float16 train · C=16 · 16x16 <span>(1 ok, 1 oom · largest batch (engine "
            "search) 1)</span></th></tr><tr data-st='ok'><td data-v='1'>1</td>") in got
    assert "<th colspan='9'>sdpa[backend=flash] float16 train · C=16 · 8x8 <span>(2 ok · largest batch (engine " \
           "search) 24)</span></th>" in got
    assert got.count("<tbody") == 4 and got.count("<tr data-st=") == 8
    assert got.endswith("</tbody></table>")
    plain = H.rows_table(frame(), None, "t")
    assert "<span>(1 ok, 1 oom)</span>" in plain and "id='t-q'" in plain and "saSort('t',0)" in plain
    rows = sorted(ROWS, key=lambda r: -r["batch"])
    ordered = H.rows_table(frame(rows), None)
    block = ordered.split("reference float16 train · C=16 · 8x8 <span>", 1)[1]
    assert block.index("<td data-v='1'>1</td>") < block.index("<td data-v='4'>4</td>")
    lg = largest(tmp_path, [largest_row(res=8, max_batch=float("nan"), status="error")])
    assert "largest batch" not in H.rows_table(frame(), lg)
    few = H.rows_table(frame().drop(columns=["source", "message"]), None)
    assert "source</th>" not in few and "<th colspan='7'>" in few


def test_atlas_table():
    assert H.atlas_table(frame()) == ""
    f = frame([result(time_s=0.0125), result(target="h100", device="H100", status="oom", peak=None),
               result(target="a100", device="A100", peak=None, time_s=None)])
    got = H.atlas_table(f)
    assert got.startswith("<h2>Atlas: 3 devices</h2>\n<p>Peak memory over the baseline / time per step, by device."
                          "</p>\n<table id=\"atlas\"><thead><tr><th>impl</th><th>options</th>")
    assert "<th>A100</th><th>H100</th><th>Tesla T4</th></tr>" in got
    assert ('<td class="s">reference</td><td class="s">{}</td><td class="s">float16</td><td class="s">train</td>'
            '<td class="s">16</td><td class="s">8</td><td class="s">8</td><td class="s">1</td><td>-</td><td>oom</td>'
            '<td>1000 B / 12.500 ms</td>') in got
    assert H._atlas_cell({"status": "ok", "peak_bytes": 2048, "time_s": float("nan")}) == "2.00 KiB"
    assert H._atlas_cell({"status": "ok", "peak_bytes": float("nan"), "time_s": 0.5}) == "- / 500.000 ms"
    assert H._atlas_cell({"status": "unsupported"}) == "unsupported"


# -- the page ----------------------------------------------------------------------------------
def test_titles():
    f = frame()
    assert H._title(f, {"targets": [{"name": "A"}, {"name": ""}, {"name": "B"}]}) == \
        "Self-attention on A, B: what fits and what to use"
    assert H._title(f, {"target": {"name": "T"}}) == "Self-attention on T: what fits and what to use"
    assert H._title(f, {}) == "Self-attention on Tesla T4: what fits and what to use"
    assert H._title(f.drop(columns=["device_name"]), {}) == "Self-attention on results: what fits and what to use"


def test_usable():
    f = frame()
    assert H._usable(f, {"target": {"usable_bytes": 7}}) == 7
    assert H._usable(f, {}) == USABLE
    assert H._usable(frame([result(usable=None)]), {}) is None


def test_body(tmp_path):
    meta = {"engine": "simulate", "command": "sa-profile sweep <x>", "results": "r<.csv",
            "environment": {"torch": "<t>"}}
    got = H.body(frame(), meta, largest(tmp_path), "p", 3, ["a <note>"])
    assert got.startswith("<h1>Self-attention on Tesla T4: what fits and what to use</h1>\n<p class=\"sub\">8 workloads "
                          "(7 ok, 1 oom): implementations reference, sdpa:flash; dtypes float16; channels 16; "
                          "resolutions 8x8, 16x16; batches 1, 4; engine simulate. Memory sizes are binary (1 GiB = "
                          f"2^30 bytes); simulated times are estimates (typical error x{T}).</p>\n"
                          "<div class='note'>a &lt;note&gt;</div>\n<section id=\"answer\"><h2>The answer</h2>")
    assert '<div id="p0" class="plot"></div>\n<div id="p1" class="plot"></div>\n<div id="p2" class="plot"></div>' in got
    assert "<pre>sa-profile sweep &lt;x&gt;</pre>\n<p class='muted'>Results: r&lt;.csv</p>" in got
    assert got.endswith('<pre>{\n &quot;torch&quot;: &quot;&lt;t&gt;&quot;\n}</pre>')
    bare = H.body(frame(), {}, None, "p", 0)
    assert "engine ?." in bare and "Results:" not in bare and "<pre></pre>" in bare and bare.endswith("<pre>{}</pre>")


def test_report_files(tmp_path):
    pd.DataFrame(ROWS + [ROWS[0]]).to_csv(tmp_path / "results.csv", index=False)
    pd.DataFrame(LARGEST).to_csv(tmp_path / "largest.csv", index=False)
    (tmp_path / "meta.json").write_text(json.dumps({"command": "sa-profile <c>", "target": {"name": "Tesla <T4>"}}))
    heard = []
    path = H.write_report(tmp_path / "results.csv", on_note=heard.append)
    assert path == tmp_path / "report.html"
    text = path.read_text()
    assert "<title>Self-attention on Tesla &lt;T4&gt;: what fits and what to use</title>" in text
    assert "<pre>sa-profile &lt;c&gt;</pre>" in text and f"Results: {tmp_path / 'results.csv'}" in text
    assert len(heard) == 1 and "1 duplicate row" in heard[0] and heard[0] in text
    assert text.count("Plotly.newPlot('fig") == 3
    other = H.write_report(tmp_path / "results.csv", tmp_path / "o.html", {"command": "given"})
    assert other == tmp_path / "o.html" and "<pre>given</pre>" in other.read_text()
    sweep = H.open_sweep(tmp_path)
    assert sweep.folder == tmp_path and sweep.meta["results"] == str(tmp_path / "results.csv")
    assert len(sweep.frame) == 8 and len(sweep.notes) == 1 and sweep.largest.max_batch.tolist() == [6, 1, 24, 12]
    assert sweep.recommendations[0]["shapes"][-1][2].row.impl == "sdpa"
    frag = sweep._repr_html_()
    assert frag.startswith("<div class=\"sa-profiler\">") and "Self-attention on Tesla &lt;T4&gt;" in frag
    assert frag.count("Plotly.newPlot('sa") == 3
    written = sweep.write_html(tmp_path / "w.html")
    assert "batch <b>12</b>" in written.read_text()
    assert H.open_sweep(tmp_path / "results.csv").folder == tmp_path


def test_plot_lines_match_their_legend_and_facet():
    """One colour per implementation and one dash per variant (channels, device), the same in the
    legend as on the lines; a line sits in its own mode x dtype panel; the x axis titled once per
    column, at the bottom."""
    rows = [result(channels=16), result(channels=32, peak=2000), result("sdpa", FLASH, peak=300),
            result(mode="forward", dtype="float32", peak=50), result("sdpa", FLASH, mode="forward", peak=60),
            result(res=32, channels=32, peak=4000)]
    fig = H.memory_figure(frame(rows), USABLE)
    legend = [t for t in fig["data"] if t.get("showlegend")]
    assert [(t["name"], t["line"].get("color"), t["line"].get("dash")) for t in legend] == [
        ("reference", page.PALETTE[0], None), ("sdpa:flash", page.PALETTE[1], None),
        ("C=16", "#555", page.DASHES[0]), ("C=32", "#555", page.DASHES[1])]
    colour = {"reference": page.PALETTE[0], "sdpa:flash": page.PALETTE[1]}
    lines = traces(fig)
    assert all(t["line"]["color"] == colour[t["name"]] == t["marker"]["line"]["color"] for t in lines)
    where = {(t["name"], t["xaxis"], t["yaxis"], t["line"]["dash"], tuple(t["x"])) for t in lines}
    # panels: rows forward, train; columns float16, float32 -> x1 (forward, fp16), x2 (forward, fp32), x3, x4
    assert where == {("reference", "x2", "y2", "solid", (64,)), ("sdpa:flash", "x", "y", "solid", (64,)),
                     ("reference", "x3", "y3", "solid", (64,)), ("reference", "x3", "y3", "dash", (64, 1024)),
                     ("sdpa:flash", "x3", "y3", "solid", (64,))}
    notes = [a["text"] for a in fig["layout"]["annotations"] if a["text"].startswith("<b>")]
    assert notes == ["<b>forward · float16</b>", "<b>forward · float32</b>", "<b>train · float16</b>",
                     "<b>train · float32</b>"]
    lay = fig["layout"]
    assert [lay[a]["title"] for a in ("xaxis", "xaxis2")] == [None, None]
    assert [lay[a]["title"] for a in ("xaxis3", "xaxis4")] == [{"text": "tokens N = H x W"}] * 2
    assert lay["xaxis"]["type"] == "log" and lay["xaxis"]["tickvals"] == [64, 1024]
    assert lay["xaxis4"]["ticktext"] == ["64", "1,024"]
    assert all(lay[f"yaxis{n}"]["type"] == "log" for n in ("", "2", "3", "4"))
    assert lay["height"] == 110 + 60 + 2 * 320
    single = H.memory_figure(frame([result(), result("sdpa", FLASH)]), USABLE)
    assert [t["name"] for t in single["data"] if t.get("showlegend")] == ["reference", "sdpa:flash"]


def test_largest_batch_plot_is_by_resolution(tmp_path):
    fig = H.batch_figure(frame(), largest(tmp_path), USABLE)
    lay = fig["layout"]
    assert lay["xaxis"]["type"] == "category" and lay["xaxis"]["title"] == {"text": "resolution H x W"}
    assert lay["yaxis"]["type"] == "log" and lay["yaxis"]["title"] == {"text": "largest batch"}
    assert lay["yaxis"]["dtick"] == 1
    atlas = frame([result(), result(target="h100", device="H100")])
    lg = largest(tmp_path, [largest_row(max_batch=5), largest_row(target="h100", device="", max_batch=50)])
    fig = H.batch_figure(atlas, lg, USABLE)
    assert sorted(t["line"]["dash"] for t in traces(fig)) == ["dash", "solid"]
    assert {t["name"] for t in fig["data"] if t.get("showlegend")} == {"reference", "Tesla T4", "h100"}


# -- edges the first mutation run left open ------------------------------------------------------
def test_load_keeps_text_that_looks_missing(tmp_path):
    rows = [dict(ROWS[0], message="NA", device_name="N/A", backend="None")]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    f = H.load(tmp_path / "results.csv")
    assert (f.message.tolist(), f.device_name.tolist(), f.backend.tolist()) == (["NA"], ["N/A"], ["None"])


def test_a_largest_batch_of_one_fits(tmp_path):
    rows = H._rows_of(largest(tmp_path, [largest_row(res=16, max_batch=1)]))
    assert rows[0].fits is True and rows[0].max_batch == 1
    rec = H.recommendations(largest(tmp_path, [largest_row(res=16, max_batch=1)]))[0]["shapes"][-1][2]
    assert rec.row is not None and rec.row.max_batch == 1


def test_derivation_needs_both_context_and_headroom():
    meta = {"target": {"key": "t4", "total_memory": 4 * 2**30, "context_bytes": 2**29}}
    assert H._derivation(meta, "t4", 3 * 2**30) == \
        "usable memory = 4.00 GiB (the card) − 1.00 GiB (CUDA context and headroom) = <b>3.00 GiB</b>"


def test_render_takes_results_as_read():
    page_ = H.render(pd.DataFrame(ROWS), {})
    assert "8 workloads (7 ok, 1 oom)" in page_


def test_a_sweep_folder_without_meta_or_largest(tmp_path):
    from sa_profiler.sweeps.largest import ensure

    pd.DataFrame([result(usable=10**9)]).to_csv(tmp_path / "results.csv", index=False)
    ensure(tmp_path)  # what `sa-profile report` does first: the answers, searched
    path = H.write_report(tmp_path / "results.csv", on_note=lambda n: None)
    text = path.read_text()
    assert "Self-attention on Tesla T4" in text and "<div class='answer'>" in text
    (tmp_path / "largest.csv").unlink()
    sweep = H.open_sweep(tmp_path)
    assert sweep.meta == {"results": str(tmp_path / "results.csv")}
    assert sweep.largest is not None and len(sweep.largest) == 1


def test_the_notebook_view(tmp_path):
    pd.DataFrame(ROWS + [ROWS[0]]).to_csv(tmp_path / "results.csv", index=False)
    pd.DataFrame(LARGEST).to_csv(tmp_path / "largest.csv", index=False)
    frag = H.open_sweep(tmp_path)._repr_html_()
    assert "function saSort" in frag and "function saFilter" in frag
    assert "batch <b>12</b>" in frag and "1 duplicate row" in frag
    ids = [s.split('"')[0] for s in frag.split('<div id="')[1:]]
    drawn = [s.split("'")[0] for s in frag.split("Plotly.newPlot('")[1:]]
    assert len(ids) == 3 and ids == drawn and ids[0].startswith("sa")


def test_the_page_draws_every_plot_and_sorts_its_table():
    text = H.render(H.prepare(pd.DataFrame(ROWS)), {})
    assert "function saSort" in text and "function saFilter" in text
    ids = [s.split('"')[0] for s in text.split('<div id="')[1:]]
    drawn = [s.split("'")[0] for s in text.split("Plotly.newPlot('")[1:]]
    assert ids == drawn == ["fig0", "fig1"]


def test_a_prepared_atlas_is_not_prepared_twice():
    atlas = H.prepare(pd.DataFrame([result(), result(target="h100", device="H100")]))
    text = H.render(atlas, {})
    assert "reference float16 train @ Tesla T4 · C=16 · 8x8" in text and "@ Tesla T4 @" not in text


def test_fits_map_cards_per_device_with_their_largest_batch(tmp_path):
    atlas = frame([result(), result(target="h100", device="H100", peak=3000)])
    lg = largest(tmp_path, [largest_row(max_batch=5), largest_row(target="h100", device="H100", max_batch=50,
                                                                  total=9000)])
    got = H.fits_map_html(atlas, lg)
    assert "<h4>reference · float16 · Tesla T4</h4>" in got and "<h4>reference · float16 · H100</h4>" in got
    assert "</table></div><div class='map'><h4>" in got
    assert "<b>5</b>" in got and "<b>50</b>" in got


def test_body_lists_the_grid_and_every_note(tmp_path):
    rows = ROWS + [result(dtype="float32", channels=32)]
    got = H.body(frame(rows), {}, largest(tmp_path), "p", 0, ["one", "two"])
    assert "dtypes float16, float32; channels 16, 32;" in got
    assert "<div class='note'>one</div><div class='note'>two</div>" in got
    assert "<td title='largest batch that fits (engine search): 6; peak there 9.28 KiB'><b>6</b></td>" in got
    assert "largest batch (engine search) 24)" in got
    assert "<pre></pre>\n\n<pre>{}</pre>" in got


def test_title_of_targets_without_names():
    assert H._title(frame(), {"targets": [{"key": "a"}]}) == "Self-attention on Tesla T4: what fits and what to use"


class _Structure(__import__("html.parser").parser.HTMLParser):
    """Text sitting directly in a table, a table section or a row (outside every cell)."""

    def __init__(self):
        super().__init__()
        self.stack, self.stray = [], []

    def handle_starttag(self, tag, attrs):
        self.stack.append(tag)

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop() != tag:
            pass

    def handle_data(self, data):
        if self.stack and self.stack[-1] in ("table", "thead", "tbody", "tr") and data.strip():
            self.stray.append(data.strip())


def test_tables_hold_text_only_in_their_cells(tmp_path):
    atlas = [result(), result(target="h100", device="H100"), result(res=16, target="h100", device="H100")]
    for f, lg in ((frame(), largest(tmp_path)), (frame(atlas), None)):
        parser = _Structure()
        parser.feed(H.body(f, {}, lg, "p", 0))
        assert parser.stray == []


def test_atlas_cell_of_a_workload_a_device_did_not_run():
    f = frame([result(), result(target="h100", device="H100"), result(res=16, target="h100", device="H100")])
    got = H.atlas_table(f)
    assert ('<td class="s">16</td><td class="s">16</td><td class="s">1</td><td>1000 B / 4.000 ms</td><td>-</td></tr>'
            in got)


def test_the_readers_guides():
    got = H.fits_map_html(frame(ROWS + [result(mode="forward")]), None)
    assert ("<p class='sub'>Each cell is one workload of the grid: its peak (baseline included) as a share of the "
            "usable memory. <b>OOM</b>: out of memory on the target; · : skipped after an OOM at a smaller batch; "
            "<b>max</b>: the largest batch that fits, from the engine's search (not limited to the grid). Hover a "
            "cell for the bytes.</p>") in got
    assert "</table></div></div><h3>Inference (forward, no_grad)</h3>" in got
    table = H.rows_table(frame())
    assert (" rows shown · click a column to sort within each configuration, a configuration to fold it</div>"
            "<table id='rows'>") in table


def test_comparison_figure_layout():
    sim = [result(batch=b, res=8, peak=p) for b, p in ((1, 1100), (4, 4000))]
    meas = [result(batch=b, res=8, peak=p, source="measured") for b, p in ((1, 1000), (4, 5000))]
    only_sim_source = frame(sim)
    assert H.comparison_figure(only_sim_source.drop(columns=["source"])) is None
    fig = H.comparison_figure(frame(sim + meas))
    points, line = fig["data"]
    assert {k: points[k] for k in ("type", "mode", "name")} == {"type": "scatter", "mode": "markers",
                                                               "name": "workloads"}
    assert line == {"type": "scatter", "mode": "lines", "x": [1000, 5000], "y": [1000, 5000],
                    "name": "simulated = measured", "line": {"dash": "dash", "color": "gray"}}
    lay = fig["layout"]
    axis = page.bytes_axis(1000, 5000)
    assert lay["xaxis"] == {**axis, "title": {"text": "measured"}}
    assert lay["yaxis"] == {**axis, "title": {"text": "simulated"}}
    assert (lay["title"]["x"], lay["title"]["xanchor"]) == (0, "left")
    assert lay["margin"] == {"l": 80, "r": 30, "t": 90, "b": 60}
    mixed = frame(sim + meas + [result(batch=2, res=8, peak=7000)])  # simulated only: not compared
    assert H.comparison_figure(mixed)["data"][0]["x"] == [1000, 5000]


def test_answer_with_several_smaller_maps_and_modes(tmp_path):
    rows = [largest_row(res=r, max_batch=m, per=p, total=9000, backend="") for r, m, p in ((4, 90, 100), (8, 40, 200),
                                                                                       (16, 3, 2000))]
    rows += [largest_row(res=16, mode="forward", max_batch=7, total=9000)]
    meta = {"targets": [{"key": "h100", "total_memory": 8 * 2**30}, {"key": "t4", "total_memory": 16 * 2**30}]}
    got = H.answer_html(H.recommendations(largest(tmp_path, rows)), meta)
    assert ("<tbody><tr><td class='s'>16x4x4</td><td class='s'>reference (bmm) float16</td><td>90</td>"
            "<td class='s'><code>convert(model, &quot;reference&quot;)</code></td></tr><tr><td class='s'>16x8x8</td>"
            "<td class='s'>reference (bmm) float16</td><td>40</td>") in got
    assert "The classic layer" not in got  # the answer is the classic layer itself
    assert "usable memory = 16.00 GiB (the card)" in got and "8.00 GiB" not in got
    assert "</div></div>\n<div class='answer'><h3>Inference (forward, no_grad) at 16 x 16 x 16" in got


def test_map_cells_at_exactly_the_usable_memory_and_the_legend():
    assert H._map_cell({"status": "ok", "usable_bytes": 10000, "total_bytes": 10000}, "w").startswith(
        "<td style='background:hsl(0,70%,72%)' title='w · 9.77 KiB of 9.77 KiB usable (100.0%)'>100%</td>"[:30])
    assert "class='oom'" not in H._map_cell({"status": "ok", "usable_bytes": 10000, "total_bytes": 10000}, "w")
    legend = H.fits_map_html(frame(), None).split("<div class='legend-bar'>", 1)[1].split("</div>", 1)[0]
    assert [s.split("</span>")[1] for s in legend.split("<span><span class='sw'")[1:]] == \
        ["10%", "50%", "75%", "90%", "100%", "OOM"]


def test_map_card_of_a_device_the_search_covered_alone(tmp_path):
    atlas = frame([result(), result(target="h100", device="H100")])
    lg = largest(tmp_path, [largest_row(max_batch=5)])  # Tesla T4's rows only
    g = [r for r in atlas.to_dict("records") if r["device"] == "Tesla T4"]
    assert "<b>5</b>" in H._map_card(("reference", "float16", "Tesla T4"), g, [1], lg, "train")
