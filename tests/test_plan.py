"""`plan`: the configurations that train a global batch, fastest first. Each plan's peak is what
`fit` answers for it applied by hand; the ranking, the words and the code come from one Plan."""

import json

import pytest
from click.testing import CliRunner

from sa_profiler.cli import cli
from sa_profiler.models.fit import fit, load, parse_inputs
from sa_profiler.models.plan import Config, Planned, _divisors, _ranked, _training, plan
from sa_profiler.models.step import StepResult, run_step
from sa_profiler.question import make_question
from sa_profiler.targets import gpus

GEN = ("examples/sagan.py:Generator", ["128"])


@pytest.fixture(scope="module")
def generator_plan():
    return plan(load(GEN[0]), parse_inputs(GEN[1]), 16, make_question(gpus.custom(3 * 2**30)), name="Generator")


def _fit_of(model, inputs, p, c):
    """`fit` with the plan's configuration applied by hand: the step it answers for it."""
    conversions = ((c.attention[1], dict(c.attention[2])),) if c.attention and c.attention[0] == "convert" else ()
    forced = c.attention[1] if c.attention and c.attention[0] == "backend" else None
    r = fit(model, inputs, c.micro_batch, p.question, amp=c.amp, optimizer=c.optimizer, sdpa_backend=forced,
            accumulation=c.accumulation, checkpointing=c.checkpointing, conversions=conversions, timeline=False)
    if c.attention and c.attention[0] == "fuse":
        return r.fused, r
    return (next(iter(r.conversions.values())) if conversions else r.step), r


def _every_row_is_fits(model, inputs, p):
    assert p.plans
    for row in p.plans:
        step, result = _fit_of(model, inputs, p, row.config)
        assert step.peak_total == row.peak and result.step_fits(step), row.config
        assert row.peak <= p.question.usable and row.config.micro_batch * row.config.accumulation == p.batch


def test_every_plan_is_what_fit_says_for_it(generator_plan):
    _every_row_is_fits(load(GEN[0]), GEN[1], generator_plan)


@pytest.mark.slow
@pytest.mark.parametrize("spec,args,inputs,batch,memory", [
    ("examples/zoo/vit.py:vit_small", {}, ["3x224x224"], 64, 6 * 2**30),
    ("examples/zoo/sagan_repo/sagan_models.py:Generator", {"batch_size": 64, "image_size": 64}, ["128"], 64,
     3 * 2**30),
], ids=["timm-style ViT", "the original SAGAN generator"])
def test_every_plan_is_what_fit_says_for_it_on_more_models(spec, args, inputs, batch, memory):
    model = load(spec, args)
    p = plan(model, parse_inputs(inputs), batch, make_question(gpus.custom(memory)), name=spec)
    assert len(p.plans) > 1
    _every_row_is_fits(model, inputs, p)


def test_plans_keep_the_global_batch_and_rank_by_speed(generator_plan):
    p = generator_plan
    assert all(r.config.micro_batch * r.config.accumulation == 16 for r in p.plans)
    from sa_profiler.engine import timing

    times = [r.time_s for r in p.plans]
    assert all(t is not None for t in times)
    assert times[0] <= min(times) * timing.typical_factor()  # within the time model's error of the fastest


def test_no_step_is_simulated_twice(monkeypatch):
    from sa_profiler.models import plan as planning

    calls = []

    def counted(factory, specs, batch, question, **kw):
        calls.append((batch, question.amp, question.optimizer, kw.get("cap"), kw.get("accumulation"),
                      kw.get("checkpointing"), str(kw.get("convert_to")), kw.get("fuse"), kw.get("sdpa_backend")))
        return run_step(factory, specs, batch, question, **kw)

    monkeypatch.setattr(planning, "run_step", counted)
    p = plan(load(GEN[0]), parse_inputs(GEN[1]), 8, make_question(gpus.custom(3 * 2**30)), name="Generator")
    assert len(calls) == len(set(calls)) == p.simulated > 1


def test_the_users_configuration_first_when_it_fits():
    p = plan(load(GEN[0]), parse_inputs(GEN[1]), 2, make_question("h100"), name="Generator", tries=("accumulation",))
    assert p.plans[0].config == Config(2, 1, None, (), None, "adam") and p.plans[0].same_training
    assert p.plans[0].config.changes(p.base) == ["nothing: it fits as it is"]


def test_nothing_fits_says_what_comes_closest():
    p = plan(load(GEN[0]), parse_inputs(GEN[1]), 8, make_question(gpus.custom(600 * 2**20), 0),
             name="Generator", tries=("accumulation",))
    assert p.plans == [] and p.closest is not None and p.closest.peak > p.question.usable
    assert p.closest.config.micro_batch == 1 and p.closest.config.accumulation == 8


def test_divisors_and_words():
    assert _divisors(12) == [12, 6, 4, 3, 2, 1] and _divisors(1) == [1]
    base = Config(64, 1, None, (), None, "adam")
    c = Config(16, 4, "fp16", ("convert", "sdpa", ()), "all", "sgd-momentum")
    assert c.changes(base) == ["micro-batch 16 x 4 accumulation steps", "AMP fp16", 'convert(model, "sdpa")',
                               "checkpointing: all", "optimizer sgd-momentum"]
    assert _training(c, base, batch_norm=True) == (False, ["batch-norm statistics of 16, not 64", "fp16 numerics",
                                                           "sgd-momentum, not adam"])
    assert _training(Config(16, 4, None, ("convert", "chunked", ()), "all", "adam"), base, batch_norm=False) == \
        (True, ["the same math"])


def _planned(time_s, same, peak=1):
    return Planned(Config(1, 1), StepResult(peak, 0), time_s, same, [])


def test_ranking_ties_within_the_time_models_error_go_to_the_same_training():
    from sa_profiler.engine import timing

    f = timing.typical_factor()
    fast_changes, tied_same, slow_same = _planned(1.0, False), _planned(f, True), _planned(f * 1.001, True)
    assert _ranked([fast_changes, tied_same, slow_same], 8) == [tied_same, fast_changes, slow_same]
    assert _ranked([_planned(None, True, 2), _planned(None, True, 1)], 8)[0].peak == 1


@pytest.mark.parametrize("args,error", [
    (["--batch", "0"], "--batch must be a positive integer"),
    (["--batch", "4", "--try", "speed"], "--try 'speed': unknown kind speed; expected a comma list of accumulation"),
    (["--batch", "4", "--optimizer", "lion"], "unknown optimizer 'lion'"),
    (["--batch", "4", "--gpu", "t5"], "unknown GPU 't5'"),
])
def test_bad_input_is_one_line(args, error):
    r = CliRunner().invoke(cli, ["plan", GEN[0], "--input", "128", *args])
    assert r.exit_code == 2 and error in r.output and "Traceback" not in r.output


def test_the_json_and_the_console_say_the_same():
    args = ["plan", GEN[0], "--input", "128", "--batch", "16", "--gpu-mem", "3G", "--try", "accumulation,precision"]
    doc = json.loads(CliRunner().invoke(cli, [*args, "--json"]).stdout)
    text = CliRunner().invoke(cli, args, env={"COLUMNS": "200"}).stdout
    assert doc["plans"] and doc["code"] in text
    top = doc["plans"][0]
    assert "; ".join(top["changes"]) in text and top["peak_bytes"] + top["left_bytes"] == doc["usable_bytes"]
    assert doc["question"]["card"]["total_memory"] == 3 * 2**30


def test_the_page_holds_the_same_rows_and_code(tmp_path):
    out = tmp_path / "plan.html"
    args = ["plan", GEN[0], "--input", "128", "--batch", "16", "--gpu-mem", "3G", "--try", "accumulation,precision"]
    r = CliRunner().invoke(cli, [*args, "--json", "--html", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    from html import escape

    page = out.read_text()
    assert escape(doc["code"], quote=False) in page.replace("&#x27;", "'").replace("&quot;", '"')
    assert page.count("<tr><td>") == len(doc["plans"])


def test_a_hostile_model_name_is_escaped_in_every_view(tmp_path):
    from sa_profiler.report.plan_views import plan_html

    import io

    from rich.console import Console

    from sa_profiler.report.plan_views import plan_json, render_plan

    name = "<script>x</script>[red]y[/red]"
    p = plan(load(GEN[0]), parse_inputs(GEN[1]), 2, make_question("h100"), name=name, tries=("accumulation",))
    assert "<script>x</script>" not in plan_html(p, tmp_path / "p.html").read_text()
    out = io.StringIO()
    render_plan(p, Console(file=out, width=200, color_system=None))
    assert name in out.getvalue()  # the console prints it as written, not as markup
    assert json.loads(json.dumps(plan_json(p)))["model"] == name


# -- each kind of change a plan makes, on the CPU step, against PyTorch's MemTracker ------------
KIND_CASES = [
    ("accumulation 2", dict(accumulation=2)), ("accumulation 4", dict(accumulation=4)),
    ("checkpointing all", dict(checkpointing="all")), ("checkpointing every-2", dict(checkpointing="every-2")),
    ("checkpointing selective", dict(checkpointing="selective")),
    ("sgd", dict(optimizer="sgd")), ("sgd-momentum", dict(optimizer="sgd-momentum")),
    ("adafactor", dict(optimizer="adafactor")), ("adamw8bit", dict(optimizer="adamw8bit")),
    ("cpu autocast bf16", dict(amp="bf16")),
]


@pytest.mark.slow
@pytest.mark.parametrize("case_id", ["vit", "bert"])
@pytest.mark.parametrize("kind,change", KIND_CASES, ids=[k for k, _ in KIND_CASES])
def test_each_kind_of_change_is_the_real_cpu_step(case_id, kind, change):
    """Simulated = the real CPU step under the tracker = PyTorch's MemTracker around the same
    real step in a plain training loop, to the byte. (Selective checkpointing on the ViT was
    once 69,632 B under: the recompute context's cache was dropped when the recompute ended,
    not when the block's backward did; `torch_compat.checkpoint._Together`.)"""
    pytest.importorskip("torch.distributed._tools.mem_tracker")
    from sa_profiler.models import blocks
    from sa_profiler.models.step import optimizer_available
    from zoo_cases import BY_ID, memtracker_peak

    if "optimizer" in change and optimizer_available(change["optimizer"]):
        pytest.skip(optimizer_available(change["optimizer"]))
    case = BY_ID[case_id]
    made = load(case.model, case.args)
    kw = dict(optimizer=change.get("optimizer"), amp=change.get("amp"), accumulation=change.get("accumulation", 1),
              checkpointing=change.get("checkpointing"))
    sim = run_step(made, list(case.inputs), case.batch, None, **kw)
    real = run_step(made, list(case.inputs), case.batch, None, device="cpu", **kw)
    assert sim.status == real.status == "ok" and sim.peak_total == real.peak_total, kind

    def factory():
        model = made()
        blocks.apply(model, change.get("checkpointing"))
        return model

    peak, _ = memtracker_peak(factory, list(case.inputs), case.batch, optimizer=change.get("optimizer", "adam"),
                              accumulation=change.get("accumulation", 1), amp=change.get("amp"))
    assert sim.peak_total == peak, (kind, sim.peak_total, peak)


def test_a_forced_sdpa_backend_is_a_plan_where_it_helps():
    """The zoo ViT on an H100 under torch 2.11 (cuDNN first): flash and the memory-efficient
    kernel forced are searched, each simulated with `sdpa_kernel` as a user forces it."""
    from dataclasses import replace as change

    from zoo_cases import BY_ID

    case = BY_ID["vit"]
    q = change(make_question("h100", torch_version="2.11", amp="bf16"))
    p = plan(load(case.model, case.args), parse_inputs(list(case.inputs)), 16, q, name="vit", tries=("attention",))
    forced = {r.config.attention[1]: r for r in p.plans if r.config.attention}
    assert set(forced) == {"flash", "efficient"} and all(r.same_training for r in forced.values())
    step = run_step(load(case.model, case.args), list(case.inputs), 16, q, sdpa_backend="efficient")
    assert step.backends == {"efficient": case.sdpa_calls} and forced["efficient"].peak == step.peak_total
    from sa_profiler.models.fit import FitError

    with pytest.raises(FitError, match="unknown SDPA backend 'fast'"):
        run_step(load(case.model, case.args), list(case.inputs), 16, q, sdpa_backend="fast")


def test_fit_counts_every_micro_batch_in_its_samples_per_second():
    one = fit(load(GEN[0]), GEN[1], 8, "t4", conversions=(), timeline=False)
    two = fit(load(GEN[0]), GEN[1], 8, "t4", conversions=(), timeline=False, accumulation=2)
    assert two.samples_per_second(two.step) == pytest.approx(16 / two.step.time_s)
    assert one.samples_per_second(one.step) == pytest.approx(8 / one.step.time_s)
    assert two.step.time_s > one.step.time_s  # two forwards and backwards per update


def test_a_forced_backend_the_card_cannot_run_costs_one_step():
    """On a T4 the zoo ViT's calls run the memory-efficient kernel; flash and cuDNN forced fail
    there (no kernel for the card): one step each tells so, and neither is searched."""
    from zoo_cases import BY_ID

    case = BY_ID["vit"]
    p = plan(load(case.model, case.args), parse_inputs(list(case.inputs)), 16, make_question("t4"), name="vit",
             tries=("attention",))
    assert p.plans and not any(r.config.attention for r in p.plans)
    assert p.simulated == 4  # the step as given, flash forced, cuDNN forced, and the step under the cap
