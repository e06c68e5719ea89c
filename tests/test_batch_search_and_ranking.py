"""The batch search, the candidate rows and the ranking, against answers worked out by hand.

The batch search is held against a linear scan over a memory model the test defines; the
candidates against torch's selection rules for the card (sdp_utils.cpp, as read in
tests/test_backend_selection.py); the ranking against rows whose times and bytes are given.
"""

import pytest

from sa_profiler.targets import evidence

from sa_profiler.targets import gpus
from sa_profiler.advice import recommend as R
from sa_profiler.question import make_question
from sa_profiler.attention import backends
from sa_profiler.engine import Record, Workload, timing

GiB, MiB = 2**30, 2**20


# -- the batch search --------------------------------------------------------------------------
def model(total, status=lambda b: "ok"):
    """run(batch) -> Record with total bytes total(batch) (peak over a 1000-byte baseline)."""
    calls = []

    def run(b):
        calls.append(b)
        return Record(Workload("reference", b, 8, 4, 4), peak_bytes=total(b) - 1000, baseline_bytes=1000,
                      status=status(b))
    run.calls = calls
    return run


def scan(total, usable, status=lambda b: "ok", limit=20_000):
    """The largest batch that fits, by trying every batch (the fits are monotone here)."""
    best = 0
    for b in range(1, limit):
        if status(b) == "ok" and total(b) <= usable:
            best = b
    return best


@pytest.mark.parametrize("usable", [1000 + 7 * 100, 1000 + 7 * 100 - 1, 1000 + 3333 * 100, 1000 + 100, 1099, 999])
def test_affine_memory_is_found_in_three_runs(usable):
    total = lambda b: 1000 + 100 * b
    run = model(total)
    best, seen = R.largest_batch(run, usable)
    assert best == scan(total, usable)
    if best >= 1:  # batch 1's peak is what an image adds: the guess is the answer, and the next batch fails
        assert sorted(seen) == sorted({1, best, best + 1}) and sorted(run.calls) == sorted(seen)
    for b, rec in seen.items():
        assert rec.workload.batch == b


def test_the_per_image_estimate_makes_the_first_guess():
    """Batch 1's peak over its baseline misses what else grows with the batch (the input, in the
    baseline here): the default guess is too high, then a step down; the caller's estimate hits."""
    total = lambda b: 1000 + 100 * b  # peak 60 per image, and 40 per image in the baseline
    def run(b):
        run.calls.append(b)
        return Record(Workload("reference", b, 8, 4, 4), peak_bytes=60 * b, baseline_bytes=1000 + 40 * b)
    run.calls = []
    assert R.largest_batch(run, 1000 + 100 * 50)[0] == 50
    assert run.calls[:2] == [1, 1 + (100 * 50 - 100) // 60]  # 83: too high
    run.calls = []
    best, seen = R.largest_batch(run, 1000 + 100 * 50, per_image=lambda r: r.peak_bytes + 40)
    assert best == 50 and run.calls == [1, 50, 51]


@pytest.mark.parametrize("total", [
    lambda b: 1000 + 10 * b * b,  # convex: the guess is too high, then halving
    lambda b: 1000 + 3000 * int(b ** 0.5),  # concave: the guess is too low, then doubling
    lambda b: 1000 + 100 * b + (50_000 if b > 40 else 0),  # a step
    lambda b: 1000 + 100 * b + (50_000 if b > 3 else 0),
], ids=["convex", "concave", "step-40", "step-3"])
@pytest.mark.parametrize("usable", [3000, 30_000, 300_000])
def test_non_affine_memory(total, usable):
    assert R.largest_batch(model(total), usable)[0] == scan(total, usable)


def test_a_failing_status_does_not_fit():
    total = lambda b: 1000 + 100 * b
    status = lambda b: "oom" if b >= 37 else "ok"
    assert R.largest_batch(model(total, status), 10**6)[0] == 36
    best, seen = R.largest_batch(model(total, lambda b: "error"), 10**6)
    assert best == 0 and list(seen) == [1]


def test_batch_one_that_does_not_fit():
    run = model(lambda b: 5000 * b)
    assert R.largest_batch(run, 4999)[0] == 0 and run.calls == [1]
    assert R.largest_batch(model(lambda b: 5000 * b), 5000)[0] == 1


def test_the_search_stops_at_max_batch():
    assert R.MAX_BATCH == 1 << 20
    flat = lambda b: 1000  # memory that does not grow: every batch fits
    assert R.largest_batch(model(flat), 10**12)[0] == R.MAX_BATCH
    assert R.largest_batch(model(flat), 1010)[0] == R.MAX_BATCH  # the guess is small, doubling reaches the cap
    slow = lambda b: 1000 + b
    assert R.largest_batch(model(slow), 1000 + R.MAX_BATCH)[0] == R.MAX_BATCH
    assert R.largest_batch(model(slow), 1000 + R.MAX_BATCH - 1)[0] == R.MAX_BATCH - 1
    assert R.largest_batch(model(slow), 1000 + 2 * R.MAX_BATCH)[0] == R.MAX_BATCH


def test_records_already_made_are_not_run_again_and_the_guess_runs_on_likely():
    total = lambda b: 1000 + 100 * b
    run, likely = model(total), model(total)
    first = model(total)(1)
    best, seen = R.largest_batch(run, 1000 + 100 * 50, {1: first}, likely=likely)
    assert best == 50 and seen[1] is first
    assert likely.calls == [50] and run.calls == [51]
    two, sixty = model(total)(2), model(total)(60)
    run = model(total)
    R.largest_batch(run, 1000 + 100 * 50, {1: first, 2: two, 60: sixty})
    assert run.calls == [50, 51]
    run = model(total)  # the records bracket the answer already: nothing runs
    assert R.largest_batch(run, 1000 + 100 * 50, {1: first, 50: model(total)(50), 51: model(total)(51)})[0] == 50
    assert run.calls == []


def test_bytes_per_image_adds_the_image_the_baseline_holds():
    w = Workload("sdpa", 1, 64, 8, 4, "float16")
    assert w.image_bytes == 64 * 8 * 4 * 2
    assert R.bytes_per_image(Record(w, peak_bytes=5000, baseline_bytes=10**6)) == 5000 + 4096
    assert R.bytes_per_image(Record(Workload("sdpa", 1, 64, 8, 4, "float32"))) == 8192


def test_total_bytes():
    w = Workload("reference", 1, 8, 4, 4)
    assert R.total_bytes(Record(w, peak_bytes=5, baseline_bytes=7)) == 12
    assert R.total_bytes(Record(w, peak_bytes=5)) == 5
    assert R.total_bytes(Record(w, baseline_bytes=7)) == 7


# -- targets ---------------------------------------------------------------------------------
def test_targets():
    t4 = gpus.lookup("t4")
    t = make_question(t4)
    assert R.DEFAULT_HEADROOM == 0.10
    assert t.headroom == int(t4.total_memory * 0.1) == 1582825472
    assert t.usable == 15828254720 - 536870912 - 1582825472
    assert t.key == "t4"
    assert make_question(t4, 0.25).headroom == int(15828254720 * 0.25)
    assert make_question(t4, GiB).headroom == GiB
    assert make_question(t4, 0).usable == 15828254720 - 536870912
    assert make_question(gpus.host()).key == "cpu"


# -- rows ------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl,options,display,label,code", [
    ("sdpa", {}, "sdpa (auto)", "sdpa", 'convert(model, "sdpa")'),
    ("sdpa", {"backend": "flash"}, "sdpa", "sdpa[backend=flash]", "convert(model, \"sdpa\", backend='flash')"),
    ("sdpa", {"layout": "auto"}, "sdpa (auto)", "sdpa[layout=auto]", "convert(model, \"sdpa\", layout='auto')"),
    ("sdpa", {"backend": "efficient", "layout": "split"}, "sdpa split", "sdpa[backend=efficient,layout=split]",
     "convert(model, \"sdpa\", backend='efficient', layout='split')"),
    ("chunked", {}, "chunked/1024", "chunked", 'convert(model, "chunked")'),
    ("chunked", {"chunk": 512, "checkpoint": True}, "chunked/512", "chunked[checkpoint=True,chunk=512]",
     'convert(model, "chunked", chunk=512, checkpoint=True)'),
    ("pooled", {}, "pooled 2x2", "pooled", 'convert(model, "pooled")'),
    ("pooled", {"pool": 4}, "pooled 4x4", "pooled[pool=4]", 'convert(model, "pooled", pool=4)'),
    ("reference", {}, "reference", "reference", 'convert(model, "reference")'),
])
def test_row_names(impl, options, display, label, code):
    row = R.Row(impl, options, "float16", "train")
    assert (row.display, row.label, row.code()) == (display, label, code)
    assert row.exact is (impl != "pooled")


def test_row_times():
    w = Workload("reference", 1, 8, 4, 4)
    row = R.Row("reference", {}, "float32", "forward")
    assert row.time_source == "" and row.time_per_image is None
    row.per_image = Record(w, time_s=None)
    assert row.time_source == "" and row.time_per_image is None
    row.per_image = Record(w, time_s=0.5)
    assert row.time_source == "estimated" and row.time_per_image == 0.5
    row.at_batch = Record(w.with_batch(8), time_s=2.0, source="measured")
    assert row.time_source == "measured" and row.time_per_image == 0.25
    row.at_batch = Record(w.with_batch(8), time_s=None)
    assert row.time_source == "" and row.time_per_image is None


@pytest.mark.parametrize("tokens,chunk", [(1, 1024), (16384, 1024), (16385, 1280), (65536, 4096), (65537, 4352),
                                          (20000, 1280)])
def test_chunk_for(tokens, chunk):
    assert R.chunk_for(tokens) == chunk


# -- candidates (torch 2.13's selection on each card) --------------------------------------------
@pytest.mark.parametrize("card,dtype,mode,channels,impls,tokens,expected", [
    # T4 (sm75): flash and cuDNN need sm80; efficient runs (8, 64) -> only the automatic SDPA row
    ("t4", "float16", "train", 64, None, 1,
     [("reference", {}), ("sdpa", {}), ("chunked", {"chunk": 1024, "checkpoint": True})]),
    ("t4", "float16", "forward", 64, None, 65537, [("reference", {}), ("sdpa", {}), ("chunked", {"chunk": 4352})]),
    # H100, torch 2.13 with its bundled cuDNN: cuDNN first and runs (8, 64); flash on the split (8, 8), efficient
    ("h100", "float16", "train", 64, ["sdpa"], 1,
     [("sdpa", {}), ("sdpa", {"backend": "flash"}), ("sdpa", {"backend": "efficient"})]),
    # (32, 256): cuDNN refuses a value head of 256 (cuDNN 9.19 < 9.22); efficient is automatic; flash on (32, 32)
    ("h100", "float16", "train", 256, ["sdpa"], 1, [("sdpa", {}), ("sdpa", {"backend": "flash"})]),
    # A100 (sm80, cuDNN last): nothing fused runs (3, 24), so math is automatic; 24 % 3 == 0 splits it to (3, 3) for flash
    ("a100", "float16", "forward", 24, ["sdpa"], 1, [("sdpa", {}), ("sdpa", {"backend": "flash"})]),
    # 17 channels: (2, 17) does not split; nothing fused runs it
    ("a100", "float16", "forward", 17, ["sdpa"], 1, [("sdpa", {})]),
    # fp32 on an A100: efficient is automatic, flash and cuDNN refuse fp32
    ("a100", "float32", "train", 64, ["sdpa"], 1, [("sdpa", {})]),
    ("a100", "float16", "forward", 64, ["sdpa", "sdpa:cudnn", "pooled", "reference", "sdpa:flash", "sdpa"], 1,
     [("sdpa", {}), ("sdpa", {"backend": "flash"}), ("sdpa", {"backend": "cudnn"}), ("pooled", {"pool": 2}),
      ("reference", {})]),
    ("a100", "float16", "forward", 4, ["sdpa"], 1, [("sdpa", {}), ("sdpa", {"backend": "flash"})]),
    # 9 channels: query/key heads of 9 // 8 = 1, which divides 9: flash on (1, 1)
    ("a100", "float16", "forward", 9, ["sdpa"], 1, [("sdpa", {}), ("sdpa", {"backend": "flash"})]),
])
def test_candidates(card, dtype, mode, channels, impls, tokens, expected):
    assert R.candidates(make_question(card, torch_version="2.13.0"), dtype, mode, channels, impls, tokens) == expected


def test_candidates_auto_backend_is_not_listed_again():
    caps = gpus.lookup("a100").caps("2.13.0")
    assert backends.select(caps, backends.torch.float16, 8, 64, False) == "efficient"  # flash needs 8 == 64
    got = R.candidates(make_question("a100", torch_version="2.13.0"), "float16", "forward", 64, ["sdpa"])
    assert got == [("sdpa", {}), ("sdpa", {"backend": "flash"}), ("sdpa", {"backend": "cudnn"})]


# -- profile_row --------------------------------------------------------------------------
def engine_of(per_image_bytes, base=1000, time_per=1e-3, status="ok", source="simulated", backend="flash"):
    calls = []

    def engine(w):
        calls.append(w)
        return Record(w, peak_bytes=per_image_bytes * w.batch, baseline_bytes=base, time_s=time_per * w.batch,
                      status=status, source=source, backend=backend, message="why" if status != "ok" else "")
    engine.calls = calls
    return engine


def test_profile_row_with_an_engine():
    target = make_question(gpus.lookup("t4"), 15828254720 - 536870912 - (1000 + 64 * MiB * 10))  # usable: 10 images
    assert target.usable == 1000 + 10 * 64 * MiB
    eng = engine_of(64 * MiB)
    row = R.profile_row(target, "sdpa", {}, "float16", "forward", 64, 8, 8, None, eng)
    assert (row.status, row.max_batch, row.batch, row.fits, row.backend, row.source) == \
        ("ok", 10, 10, True, "flash", "simulated")
    assert row.per_image.workload.batch == 1 and row.at_batch.workload.batch == 10
    assert (row.evidence, row.caveat) == (evidence.SOURCE, "")
    w = eng.calls[0]
    assert (w.impl, w.channels, w.height, w.width, w.dtype, w.mode, w.target) == \
        ("sdpa", 64, 8, 8, "float16", "forward", "t4")
    asked = R.profile_row(target, "sdpa", {}, "float16", "forward", 64, 8, 8, 4, eng)
    assert (asked.max_batch, asked.batch, asked.fits, asked.at_batch.workload.batch) == (10, 4, True, 4)
    over = R.profile_row(target, "sdpa", {}, "float16", "forward", 64, 8, 8, 11, eng)
    assert (over.max_batch, over.batch, over.fits, over.at_batch.workload.batch) == (10, 11, False, 11)
    big = R.profile_row(target, "sdpa", {}, "float16", "forward", 64, 8, 8, None, engine_of(11 * 64 * MiB))
    assert (big.max_batch, big.batch, big.fits, big.at_batch.workload.batch) == (0, 0, False, 1)


def test_profile_row_that_cannot_run():
    target = make_question(gpus.lookup("t4"))
    row = R.profile_row(target, "sdpa", {"backend": "flash"}, "float16", "forward", 64, 8, 8, None,
                        engine_of(MiB, status="unsupported"))
    assert (row.status, row.message, row.max_batch, row.batch, row.fits, row.at_batch) == \
        ("unsupported", "why", 0, 0, False, None)


def test_profile_row_evidence_of_cudnn_off_sm90():
    target = make_question(gpus.lookup("a100"))
    row = R.profile_row(target, "sdpa", {"backend": "cudnn"}, "float16", "train", 64, 8, 8, None,
                        engine_of(MiB, backend="cudnn"))
    assert row.evidence == evidence.ASSUMPTION and "sm80 backward" in row.caveat
    measured = R.profile_row(target, "sdpa", {}, "float16", "train", 64, 8, 8, None,
                             engine_of(MiB, backend="cudnn", source="measured"))
    assert (measured.evidence, measured.source) == (evidence.MEASURED, "measured")


def test_profile_row_on_the_simulator_times_the_batch_it_answers():
    target = make_question(gpus.custom(GiB))
    row = R.profile_row(target, "reference", {}, "float32", "forward", 64, 8, 8, None)
    usable = GiB - 536870912 - int(GiB * 0.1)
    assert target.usable == usable
    per, step = row.per_image, row.at_batch
    assert row.fits and row.batch == row.max_batch > 1 and step.workload.batch == row.batch
    assert R.total_bytes(step) <= usable
    after = R.simulate(step.workload.with_batch(row.batch + 1), timing=False, cap=usable)
    assert after.status != "ok" or R.total_bytes(after) > usable
    assert per.time_s is not None and step.time_s is not None and step.time_s > per.time_s
    asked = R.profile_row(target, "reference", {}, "float32", "forward", 64, 8, 8, 3)
    assert asked.batch == 3 and asked.at_batch.workload.batch == 3 and asked.at_batch.time_s is not None
    assert asked.at_batch.time_s == pytest.approx(R.simulate(asked.at_batch.workload).time_s)


# -- the ranking ---------------------------------------------------------------------------------
def row(impl="sdpa", dtype="float16", mode="train", t=None, peak=100, at_peak=None, max_batch=8, status="ok",
        fits=True, options=None, source="simulated", ev="source", caveat="", backend="flash"):
    r = R.Row(impl, dict(options or {}), dtype, mode, status=status, backend=backend, fits=fits, max_batch=max_batch,
              batch=max_batch, evidence=ev, caveat=caveat)
    w = Workload(impl, 1, 8, 4, 4, dtype, mode)
    r.per_image = Record(w, peak_bytes=peak, baseline_bytes=0, time_s=t, source=source)
    r.at_batch = Record(w.with_batch(max_batch), peak_bytes=at_peak if at_peak is not None else peak * max_batch,
                        baseline_bytes=0, time_s=None if t is None else t * max_batch, source=source)
    return r


def test_nothing_fits():
    for rows in ([], [row(fits=False)], [row(status="unsupported")], [row(mode="forward")], [row(impl="pooled")]):
        rec = R.recommend(rows, "train", None)
        assert (rec.row, rec.mode, rec.reason, rec.alternative) == \
            (None, "train", "no exact implementation fits even one image", None)


def test_the_filters_leave_out_a_faster_row():
    good = row(t=1.0)
    for bad in (row(t=0.1, fits=False), row(t=0.1, status="error"), row(t=0.1, mode="forward"),
                row(impl="pooled", t=0.1)):
        assert R.recommend([bad, good], "train", None).row is good


def test_without_times_the_largest_batch_wins_then_the_wider_dtype():
    a, b = row(max_batch=8, dtype="float16"), row(max_batch=9, dtype="float16")
    rec = R.recommend([a, b], "train", None)
    assert rec.row is b and rec.reason == "fits with the headroom (no time known) and takes the largest batch"
    f32, bf16, f16, f64 = (row(max_batch=8, dtype=d) for d in ("float32", "bfloat16", "float16", "float64"))
    assert R.recommend([f64, f16, bf16, f32], "train", None).row is f32
    assert R.recommend([f64, f16, bf16], "train", None).row is bf16
    assert R.recommend([f64, f16], "train", None).row is f16


def test_the_fastest_measured_row_wins_alone():
    fast, slow = row(t=1.0, peak=500, source="measured"), row(t=1.01, peak=100, source="measured")
    rec = R.recommend([slow, fast], "train", None)
    assert rec.row is fast
    assert rec.reason == "fits with the headroom and is the fastest per image among those that fit (measured)"


def test_estimates_within_the_typical_error_tie_and_the_smaller_memory_wins():
    factor = timing.typical_factor()
    assert factor > 1.05
    fast = row(t=1.0, peak=500)
    near = row(impl="chunked", t=factor * 0.999, peak=100, options={"chunk": 256})
    far = row(impl="reference", t=factor * 1.001, peak=50, backend="")
    rec = R.recommend([fast, far, near], "train", None)
    assert rec.row is near
    assert rec.reason == (f"fits with the headroom; its estimated time per image is within the estimate's typical "
                          f"error (x{factor:.2f}) of the fastest, as is that of sdpa (auto) float16, and it needs the "
                          f"least memory of these")
    alone = R.recommend([fast, far], "train", None)
    assert alone.row is fast and alone.reason.endswith("among those that fit (estimated)")
    edge = row(t=factor, peak=100)  # exactly the fastest x the factor: tied
    assert R.recommend([fast, edge], "train", None).row is edge


def test_memory_compared_at_the_asked_batch_or_one_image():
    a = row(t=1.0, peak=100, at_peak=900)
    b = row(t=1.0, peak=200, at_peak=800)
    assert R.recommend([a, b], "train", None).row is a  # one image
    assert R.recommend([a, b], "train", 8).row is b  # at the batch
    b.at_batch = None
    b.per_image.time_s = 1.0
    assert R.recommend([a, b], "train", 8).row is b  # no record at the batch: its one image (200 < 900)


def test_ties_in_memory_go_to_the_larger_batch_then_dtype_then_time():
    a, b = row(t=1.0, peak=100, max_batch=8), row(t=1.1, peak=100, max_batch=9, at_peak=800)
    assert R.recommend([a, b], "train", None).row is b
    c, d = row(t=1.0, peak=100, dtype="float16"), row(t=1.1, peak=100, dtype="bfloat16")
    assert R.recommend([c, d], "train", None).row is d
    e, f = row(t=1.1, peak=100), row(t=1.0, peak=100)
    assert R.recommend([e, f], "train", None).row is f


def test_a_forced_backend_on_an_assumption_is_named_not_recommended():
    caveat = "cuDNN attention is closed source: assumed"
    forced = row(t=0.5, options={"backend": "cudnn"}, ev=evidence.ASSUMPTION, caveat=caveat, backend="cudnn")
    auto = row(t=2.0, backend="efficient")
    rec = R.recommend([forced, auto], "train", None)
    assert rec.row is auto and rec.alternative is forced
    assert rec.reason == ("fits with the headroom and is the fastest per image among those that fit (estimated); "
                          f"sdpa (cudnn) would rank first, but is not forced here: {caveat}")
    sure = row(t=0.5, options={"backend": "cudnn"}, ev=evidence.MEASURED, backend="cudnn")
    rec = R.recommend([sure, auto], "train", None)
    assert rec.row is sure and rec.alternative is None
    unforced = row(t=0.5, ev=evidence.ASSUMPTION, backend="cudnn")
    assert R.recommend([unforced, auto], "train", None).row is unforced
    slow_forced = row(t=9.0, options={"backend": "cudnn"}, ev=evidence.ASSUMPTION, backend="cudnn")
    rec = R.recommend([slow_forced, auto], "train", None)
    assert rec.row is auto and rec.alternative is None and "would rank first" not in rec.reason
    only = R.recommend([forced], "train", None)
    assert only.row is None and only.alternative is forced


# -- alternatives ------------------------------------------------------------------------------
def test_alternatives():
    target = make_question(gpus.lookup("t4"))
    eng = engine_of(MiB)
    alts = R.alternatives(target, 64, 16, 16, "float16", "train", eng)
    assert [a.what for a in alts] == [
        "attention at 1/2 resolution (8 x 8): pool before the layer, upsample after",
        "attention at 1/4 resolution (4 x 4): pool before the layer, upsample after",
        "keys/values max-pooled 2x2 (as in BigGAN)", "keys/values max-pooled 4x4 (as in BigGAN)"]
    assert [a.code for a in alts] == [
        "F.interpolate(attn(F.avg_pool2d(x, 2))[0], scale_factor=2)",
        "F.interpolate(attn(F.avg_pool2d(x, 4))[0], scale_factor=4)",
        'convert(model, "pooled", pool=2)', 'convert(model, "pooled", pool=4)']
    assert [(a.row.impl, a.row.options, a.row.per_image.workload.height, a.row.per_image.workload.width)
            for a in alts] == [("sdpa", {}, 8, 8), ("sdpa", {}, 4, 4), ("pooled", {"pool": 2}, 16, 16),
                               ("pooled", {"pool": 4}, 16, 16)]
    assert all(a.row.mode == "train" and a.row.dtype == "float16" and a.row.batch == a.row.max_batch > 0
               for a in alts)
    odd = R.alternatives(target, 64, 6, 10, "float16", "train", eng)  # 2 divides both, 4 neither
    assert [a.what for a in odd] == ["attention at 1/2 resolution (3 x 5): pool before the layer, upsample after",
                                     "keys/values max-pooled 2x2 (as in BigGAN)"]
    assert [(w.impl, w.batch, w.height, w.width, w.options) for w in eng.calls if w.batch == 1] == [
        ("sdpa", 1, 8, 8, ()), ("sdpa", 1, 4, 4, ()), ("pooled", 1, 16, 16, (("pool", 2),)),
        ("pooled", 1, 16, 16, (("pool", 4),)), ("sdpa", 1, 3, 5, ()), ("pooled", 1, 6, 10, (("pool", 2),))]
    for h, w in ((8, 6), (6, 8)):  # 4 divides one side only: neither the 1/4 map nor 4x4 pooling
        assert [a.what for a in R.alternatives(target, 64, h, w, "float16", "train", eng)] == [
            f"attention at 1/2 resolution ({h // 2} x {w // 2}): pool before the layer, upsample after",
            "keys/values max-pooled 2x2 (as in BigGAN)"]
    assert len(R.alternatives(target, 64, 5, 8, "float16", "train", eng)) == 0
    assert len(R.alternatives(target, 64, 9, 9, "float16", "train", eng)) == 0


def test_one_image_that_does_not_fit_is_a_row_that_ran():
    """Batch 1 runs without the memory cap: its peak is the answer even when it exceeds the card."""
    target = make_question(gpus.custom(600 * MiB))
    assert target.usable == 600 * MiB - 536870912 - int(600 * MiB * 0.1)
    row = R.profile_row(target, "reference", {}, "float32", "forward", 64, 128, 128, None)
    assert (row.status, row.max_batch, row.batch, row.fits) == ("ok", 0, 0, False)
    assert R.total_bytes(row.per_image) >= 2 * (128 * 128) ** 2 * 4 > target.usable  # energy and softmax: 2 x N^2 x 4 B
    assert row.at_batch is row.per_image and row.per_image.time_s is not None


def test_the_recommendation_says_its_mode():
    rec = R.recommend([row(max_batch=3)], "train", None)  # no time known
    assert (rec.row.max_batch, rec.mode) == (3, "train")
    assert R.recommend([row(t=1.0)], "train", None).mode == "train"
    assert R.recommend([row(t=1.0, mode="forward")], "forward", 4).mode == "forward"


def test_the_forced_alternative_is_ranked_at_the_asked_batch():
    """Tied in time, the forced cuDNN row needs less memory at batch 8 and more for one image: at
    batch 8 it would rank first (so it is named), for one image it would not."""
    forced = row(t=1.0, peak=300, at_peak=800, options={"backend": "cudnn"}, ev=evidence.ASSUMPTION, backend="cudnn")
    auto = row(t=1.0, peak=200, at_peak=900, backend="efficient")
    at8 = R.recommend([forced, auto], "train", 8)
    assert at8.row is auto and at8.alternative is forced
    one = R.recommend([forced, auto], "train", None)
    assert one.row is auto and one.alternative is None


def test_the_search_at_its_edges():
    slow = lambda b: 1000 + b  # one byte per image: the guess is still the answer
    run = model(slow)
    assert R.largest_batch(run, 1000 + R.MAX_BATCH - 1)[0] == R.MAX_BATCH - 1
    assert sorted(run.calls) == [1, R.MAX_BATCH - 1, R.MAX_BATCH]
    # the guess lands one below MAX_BATCH and MAX_BATCH itself fits: it is tried, and is the answer
    flat_after_two = lambda b: 1000 + min(b, 2)
    assert R.largest_batch(model(flat_after_two), 1000 + R.MAX_BATCH - 1)[0] == R.MAX_BATCH
    # batch 2 fails for another reason than its bytes: the search halves down to 1
    only_one = model(lambda b: 1000 + b, status=lambda b: "ok" if b == 1 else "error")
    assert R.largest_batch(only_one, 10**6)[0] == 1


def test_profile_row_keeps_an_engines_missing_time():
    """Only the simulator's time is filled in for the answered batch; another engine's record
    stands as it came."""
    def engine(w):
        return Record(w, peak_bytes=MiB * w.batch, baseline_bytes=0, time_s=1e-3 if w.batch == 1 else None)
    row = R.profile_row(make_question(gpus.lookup("t4")), "sdpa", {}, "float16", "forward", 64, 8, 8, 4, engine)
    assert row.at_batch.workload.batch == 4 and row.at_batch.time_s is None and row.per_image.time_s == 1e-3


def test_a_batch_of_zero_does_not_fit():
    row = R.profile_row(make_question(gpus.lookup("t4")), "sdpa", {}, "float16", "forward", 64, 8, 8, 0,
                        engine_of(MiB))
    assert (row.batch, row.fits, row.max_batch > 0) == (0, False, True)


def test_the_reason_names_every_other_tied_row():
    a = row(t=1.0, peak=100)
    b = row(impl="chunked", t=1.01, peak=200, options={"chunk": 256})
    c = row(impl="reference", t=1.02, peak=300, dtype="float32", backend="")
    rec = R.recommend([c, b, a], "train", None)
    assert rec.row is a
    assert "as is that of reference float32, chunked/256 float16, and it needs" in rec.reason


def test_candidates_follow_the_mode():
    """On sm100 with torch 2.11, cuDNN runs a value head of 256 forward only (TORCH_RULES): the
    automatic backend and the rows offered differ between inference and training."""
    import dataclasses

    sm100 = dataclasses.replace(gpus.lookup("h100"), key="sm100-card", capability=(10, 0))
    sm100 = make_question(sm100, torch_version="2.11.0")
    assert R.candidates(sm100, "float16", "forward", 256, ["sdpa"]) == \
        [("sdpa", {}), ("sdpa", {"backend": "flash"}), ("sdpa", {"backend": "efficient"})]
    assert R.candidates(sm100, "float16", "train", 256, ["sdpa"]) == \
        [("sdpa", {}), ("sdpa", {"backend": "flash"})]


def test_headroom_in_bytes_may_be_a_float():
    """A fraction below 1, else bytes (1.0 is one byte, not the whole card)."""
    t4 = gpus.lookup("t4")
    assert make_question(t4, 1.0).headroom == 1
    assert make_question(t4, float(GiB)).headroom == GiB
    assert make_question(t4, 0.999).headroom == int(t4.total_memory * 0.999)


def test_concave_memory_doubles_once_guesses_keep_falling_short():
    """Memory that grows ever slower: the secant always falls short; from the third fitting
    guess the batch at least doubles, so the search does not creep."""
    total = lambda b: 1000 + int(3000 * b ** 0.25)
    run = model(total)
    best, _ = R.largest_batch(run, 1000 + 3000 * 30)
    assert best == scan(total, 1000 + 3000 * 30, limit=900_000) > 800_000
    assert len(run.calls) <= 45


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.integers(0, 5000), min_size=1, max_size=60), tail=st.integers(0, 400),
       usable=st.integers(0, 200_000), fail_from=st.one_of(st.none(), st.integers(1, 3000)),
       hint=st.one_of(st.none(), st.integers(-5, 5000)))
def test_any_monotone_memory_gives_the_scans_answer(steps, tail, usable, fail_from, hint):
    """Any non-decreasing memory (arbitrary growth over the first batches, then affine), any
    batch from which the status fails and any hint: the answer is the linear scan's, in a bounded
    number of runs (twice a bisection over the batch range, and a few more)."""
    def total(b):
        return 1000 + sum(steps[:b]) + max(b - len(steps), 0) * tail
    status = (lambda b: "ok") if fail_from is None else (lambda b: "ok" if b < fail_from else "error")
    run = model(total, status)
    best, seen = R.largest_batch(run, usable, hint=hint)
    expect = scan(total, usable, status, limit=3000) if total(2999) > usable or (fail_from or 1 << 30) <= 3000 \
        else None
    if expect is not None:
        assert best == expect
    else:  # everything up to the scan's limit fits: check the boundary itself
        assert best == R.MAX_BATCH or (total(best) <= usable < total(best + 1))
    assert len(run.calls) == len(set(run.calls)) <= 2 * 21 + 6


def test_a_hint_is_tried_first_then_its_neighbour():
    """A step with the same bytes in another dtype gives the hint: right, it costs two runs
    after batch 1; wrong on either side, the search goes on from what the runs showed; outside
    the bracket (batch 1 or past MAX_BATCH), it is ignored."""
    total = lambda b: 1000 + 100 * b
    for hint, first_calls in ((50, [1, 50, 51]), (60, [1, 60, 59]), (40, [1, 40, 41]), (1, [1, 50, 51]), (10**9, [1, 50, 51])):
        run = model(total)
        best, _ = R.largest_batch(run, 1000 + 100 * 50, hint=hint)
        assert best == 50 and run.calls[:3] == first_calls[:3]
    run = model(total)
    assert R.largest_batch(run, 1000 + 100 * 50, hint=50)[0] == 50 and len(run.calls) == 3
    # the hint runs on `likely` (it is expected to be the answer), as do the last batch below a
    # failing one and a guess inside the bracket; bisections and checks run on `run`
    run, likely = model(total), model(total)
    R.largest_batch(run, 1000 + 100 * 50, {1: model(total)(1)}, likely=likely, hint=50)
    assert likely.calls == [50] and run.calls == [51]
    run, likely = model(total), model(total)
    assert R.largest_batch(run, 1000 + 100 * 50, {1: model(total)(1)}, likely=likely, hint=60)[0] == 50
    assert likely.calls == [60, 59, 50] and run.calls == [30, 51]


# -- the search's runs, pinned: how many steps a question simulates is its latency -------------
def records(total, peak, status=lambda b: "ok"):
    """run(batch) -> Record with total bytes total(batch), of which peak(batch) over the baseline."""
    def run(b):
        run.calls.append(b)
        return Record(Workload("reference", b, 8, 4, 4), peak_bytes=peak(b), baseline_bytes=total(b) - peak(b),
                      status=status(b))
    run.calls = []
    return run


def test_a_short_first_guess_is_corrected_by_the_secant():
    """Batch 1's peak holds a fixed part (500 bytes): the first guess falls short, fits, and the
    secant through batch 1 and it is exact."""
    run = records(lambda b: 1500 + 100 * b, lambda b: 500 + 100 * b)
    assert R.largest_batch(run, 1500 + 100 * 50)[0] == 50
    assert run.calls == [1, 1 + (100 * 49) // 600, 50, 51]


def test_a_long_first_guess_is_corrected_through_the_failing_batch():
    """An estimate of half the bytes per image: the first guess is twice the answer and fails;
    its bytes (the step ran to the end) put the line through batch 1 and it: exact."""
    run = records(lambda b: 1000 + 100 * b, lambda b: 100 * b)
    best, _ = R.largest_batch(run, 1000 + 100 * 50, per_image=lambda r: 50)
    assert best == 50 and run.calls == [1, 99, 50, 51]
    # out of memory before its end, the failing step has no bytes: the batch below it, then
    # bisection, then the secant through batch 1 and the fitting half, checked by the batch after
    run = records(lambda b: 1000 + 100 * b, lambda b: 100 * b, status=lambda b: "oom" if b > 50 else "ok")
    best, _ = R.largest_batch(run, 1000 + 100 * 50, per_image=lambda r: 50)
    assert best == 50 and run.calls == [1, 99, 98, 49, 50, 51]
    run = records(lambda b: 1000 + 100 * b, lambda b: 100 * b, status=lambda b: "oom" if b > 40 else "ok")
    best, _ = R.largest_batch(run, 1000 + 100 * 50, per_image=lambda r: 50)
    assert best == 40 and run.calls == [1, 99, 98, 49, 25, 48, 36, 47, 41, 40]


@pytest.mark.parametrize("total, usable, calls", [
    # convex, every failing step out of memory: the batch below the guess, halving, the secant
    (lambda b: 1000 + 10 * b * b, 3000, [1, 200, 199, 100, 50, 25, 13, 15, 14]),
    (lambda b: 1000 + 100 * b + (50_000 if b > 40 else 0), 30_000, [1, 290, 289, 145, 73, 37, 72, 54, 53, 45, 44, 40, 43, 41]),
    # concave: guesses fall short; the fourth fitting step in a row at least doubles the batch
    (lambda b: 1000 + int(3000 * b ** 0.5), 31_000, [1, 10, 38, 73, 146, 94, 99, 100, 123, 101]),
    # a first guess far above: its bracket not halved, a bisection; a guess that halves it is not
    (lambda b: 1000 + 10 * b * b, 7777, [1, 677, 676, 338, 169, 85, 43, 22, 30, 29, 25, 26, 27]),
], ids=["convex", "step", "concave", "convex-far"])
def test_the_runs_of_a_search_far_from_affine(total, usable, calls):
    status = lambda b: "ok" if total(b) <= usable else "oom"
    run = records(total, lambda b: total(b) - 1000, status)
    assert R.largest_batch(run, usable)[0] == scan(total, usable)
    assert run.calls == calls


def test_a_convex_memory_whose_steps_ran_to_the_end():
    """Failing steps that ran to the end put a line through batch 1 and them (regula falsi):
    on convex memory it lands low, and the secant from there high; each guess that does not
    halve the bracket is followed by a bisection, and the one that lands where it was aimed by
    the batch after it."""
    total = lambda b: 1000 + 10 * b * b
    run = records(total, lambda b: total(b) - 1000)
    assert R.largest_batch(run, 30_000, per_image=lambda r: 50)[0] == scan(total, 30_000) == 53
    assert run.calls == [1, 580, 5, 484, 244, 243, 124, 123, 64, 63, 34, 62, 48, 55, 54, 51, 53]


def test_a_guess_clamped_to_max_batch_that_fails_is_followed_by_halving():
    """Only batch 1 fits and the estimate says every batch does: the guess is MAX_BATCH; it
    fails out of memory without halving the bracket, so the search halves down to batch 2."""
    run = records(lambda b: 1000 + b, lambda b: b, status=lambda b: "ok" if b == 1 else "oom")
    assert R.largest_batch(run, 10**9, per_image=lambda r: 1)[0] == 1
    assert run.calls == [1] + [R.MAX_BATCH >> k for k in range(20)]


def test_records_given_bracket_the_answer_before_any_run():
    total = lambda b: 1000 + 100 * b
    made = {b: model(total)(b) for b in (1, 2, 3, 5)}
    run = model(total)
    assert R.largest_batch(run, 1000 + 100 * 2, made)[0] == 2 and run.calls == []
    # a given failing batch past another one leaves the bracket as the first made it
    oom = lambda b: "ok" if b <= 2 else "oom"
    made = {b: model(total, oom)(b) for b in (1, 3, 9)}
    run = model(total, oom)
    assert R.largest_batch(run, 1000 + 100 * 2, made)[0] == 2 and run.calls == [2]
    # batch 2 given: the secant through it and batch 1 makes the guess, not the estimate
    made = records(lambda b: 1500 + 100 * b, lambda b: 500 + 100 * b)
    run = records(lambda b: 1500 + 100 * b, lambda b: 500 + 100 * b)
    assert R.largest_batch(run, 1500 + 100 * 50, {1: made(1), 2: made(2)})[0] == 50 and run.calls == [50, 51]
    # MAX_BATCH given and fitting: the answer, nothing run
    run = model(lambda b: 1000)
    assert R.largest_batch(run, 10**6, {1: model(lambda b: 1000)(1), R.MAX_BATCH: model(lambda b: 1000)(R.MAX_BATCH)})[0] \
        == R.MAX_BATCH and run.calls == []
    # records past MAX_BATCH are not answers
    flat = model(lambda b: 1000)
    run = model(lambda b: 1000)
    assert R.largest_batch(run, 10**6, {1: flat(1), R.MAX_BATCH + 3: flat(R.MAX_BATCH + 3)})[0] == R.MAX_BATCH
    assert run.calls == [1 + 10**6 - 1000, R.MAX_BATCH]  # one byte per image assumed, then a zero slope


def test_memory_that_stops_growing_jumps_to_max_batch():
    """Flat after batch 2: the secant's slope is next to nothing, so the next guess is the last
    batch left; flat from batch 1, the slope is zero and the same holds."""
    run = model(lambda b: 1000 + min(b, 2) * 100)
    assert R.largest_batch(run, 1000 + 10**6)[0] == R.MAX_BATCH
    assert run.calls == [1, 10**4, R.MAX_BATCH]
    run = model(lambda b: 1100)
    assert R.largest_batch(run, 1000 + 10**6)[0] == R.MAX_BATCH
    assert run.calls == [1, 10**4, R.MAX_BATCH]


def test_a_hint_at_the_bracket_is_ignored():
    total = lambda b: 1000 + 100 * b
    for hint in (R.MAX_BATCH + 1, 0, -3):
        run = model(total)
        assert R.largest_batch(run, 1000 + 100 * 50, hint=hint)[0] == 50 and run.calls == [1, 50, 51]


def test_a_rows_search_runs_three_steps_and_times_the_answer_once(monkeypatch):
    """profile_row on the simulator: batch 1 (timed, uncapped), the guess (timed: usually the
    answer) and the batch after it (untimed); the answer's time is the guess's, with no step run
    again. With the hint of an equal row, the same three steps."""
    runs = []
    simulate = R.simulate

    def counted(w, question=None, **kw):
        runs.append((w.batch, kw.get("timing", True), kw.get("cap") is not None))
        return simulate(w, question, **kw)

    monkeypatch.setattr(R, "simulate", counted)
    target = make_question(gpus.lookup("t4"))
    row = R.profile_row(target, "sdpa", {}, "float16", "train", 128, 64, 64, None, counted)
    b = row.max_batch
    assert b > 2 and runs[0] == (1, True, False) and sorted(r[0] for r in runs) == [1, b, b + 1]
    assert (b, True, True) in runs  # the answer, timed where it ran (the guess, or the last batch left below it)
    assert row.at_batch is not None and row.at_batch.time_s is not None and row.at_batch.workload.batch == b
    runs.clear()
    again = R.profile_row(target, "sdpa", {}, "float16", "train", 128, 64, 64, None, counted, hint=b)
    assert again.max_batch == b and [r[0] for r in runs] == [1, b, b + 1]
    runs.clear()
    R.profile_row(target, "sdpa", {}, "float16", "train", 128, 64, 64, 7, counted)  # a batch asked for
    assert not any(timed for _, timed, _ in runs[1:-1]) and runs[-1] == (7, True, False)
