"""Gradient accumulation and activation checkpointing of a whole model's step: the simulated CPU
step equals the real one to the byte for each setting, on a zoo model and on library models;
what each does to the peak; the repeated blocks found; the settings refused; the CLI options."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from sa_profiler.cli import cli
from sa_profiler.models import blocks
from sa_profiler.models.fit import FitError, fit, load, run_step
from zoo_cases import BY_ID, memtracker_peak, zoo

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SETTINGS = [{"accumulation": 2}, {"accumulation": 4}, {"checkpointing": "all"}, {"checkpointing": "every-2"},
            {"checkpointing": "selective"}]
IDS = [f"{k}={v}" for s in SETTINGS for k, v in s.items()]
VIT6 = ("examples/zoo/vit.py:VisionTransformer",
        dict(img_size=32, patch_size=8, num_classes=10, embed_dim=64, depth=6, num_heads=4))




@functools.lru_cache(maxsize=None)
def _vit6(batch: int, accumulation: int = 1, checkpointing: str | None = None):
    return run_step(load(VIT6[0], dict(VIT6[1])), ["3x32x32"], batch, None, accumulation=accumulation,
                    checkpointing=checkpointing)


def _same(factory, inputs, batch, **setting):
    sim = run_step(factory, inputs, batch, None, **setting)
    real = run_step(factory, inputs, batch, None, device="cpu", **setting)
    assert sim.status == real.status == "ok", (sim.message, real.message)
    assert sim.peak_total == real.peak_total
    assert sim.breakdown == real.breakdown and sim.modules == real.modules
    assert sim.backends == real.backends
    return sim


# -- 1. the simulated CPU step is the real one, to the byte ---------------------------------
@pytest.mark.parametrize("setting", SETTINGS, ids=IDS)
@pytest.mark.parametrize("case_id", ["vit", "bert"])
def test_zoo_step_simulated_equals_real(case_id, setting):
    _same(*zoo(case_id), **setting)


LIBRARY = {
    "timm-vit": ("timm:vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 64,
                                               "num_heads": 2}, ["3x32x32"], 32, "timm"),
    "transformers-bert": ("transformers:bert", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                                "intermediate_size": 128, "vocab_size": 1000,
                                                "max_position_embeddings": 64},
                          ["input_ids=32:int64:range=0..1000", "attention_mask=32:int64:pad=0.25"], 4, "transformers"),
}


@pytest.mark.slow  # the real libraries
@pytest.mark.parametrize("setting", SETTINGS, ids=IDS)
@pytest.mark.parametrize("key", list(LIBRARY))
def test_library_step_simulated_equals_real(key, setting):
    spec, args, inputs, batch, library = LIBRARY[key]
    pytest.importorskip(library)
    factory = load(spec, dict(args))
    plain = run_step(factory, inputs, batch, None)
    sim = _same(factory, inputs, batch, **setting)
    if setting.get("checkpointing"):  # every checkpointed step holds fewer activations at its peak
        assert sim.breakdown["activations"] < plain.breakdown["activations"]


# -- 2. what accumulation does ------------------------------------------------------------
def test_accumulation_1_is_the_step_as_it_was():
    factory, inputs, batch = zoo("vit")
    plain = run_step(factory, inputs, batch, None, timeline=True)
    one = run_step(factory, inputs, batch, None, timeline=True, accumulation=1)
    assert one.peak_total == plain.peak_total and one.breakdown == plain.breakdown
    assert one.timeline == plain.timeline and one.peak_index == plain.peak_index


def test_accumulation_runs_k_forwards_per_optimizer_step():
    factory, inputs, batch = zoo("vit")
    for k in (1, 3):
        r = run_step(factory, inputs, batch, None, timeline=True, accumulation=k)
        phases = [phase for _, _, phase, _ in r.timeline if phase != "baseline"]
        starts = [p for prev, p in zip(["optimizer", *phases], phases) if p != prev]
        assert starts == (["forward", "backward"] * k + ["optimizer"]) * 2


def test_accumulation_holds_the_gradients_through_the_later_micro_steps():
    one, two, four, double = _vit6(16), _vit6(16, 2), _vit6(16, 4), _vit6(32)
    params = one.breakdown["parameters"]
    # at k=1 the peak comes in the backward with few gradients made; with k>1 every gradient of the
    # earlier micro-batches is alive at the peak, in a later micro-step's forward or backward
    assert one.breakdown["gradients"] < params and two.breakdown["gradients"] == params
    assert one.peak_total < two.peak_total <= one.peak_total + params + two.breakdown["temporary"]
    assert four.peak_total == two.peak_total  # the peak does not grow with k
    # ... and costs far less than the batch it stands for (an activation-dominated model)
    assert two.peak_total < double.peak_total


# -- 3. what checkpointing does ------------------------------------------------------------
def test_checkpointing_lowers_activations_and_the_peak():
    off, every2, selective, full = (_vit6(64, 1, c) for c in (None, "every-2", "selective", "all"))
    assert full.breakdown["activations"] < every2.breakdown["activations"] < off.breakdown["activations"]
    assert selective.breakdown["activations"] < off.breakdown["activations"]
    assert full.peak_total < every2.peak_total < off.peak_total and selective.peak_total < off.peak_total
    assert full.breakdown["gradients"] == off.breakdown["gradients"]  # the same step, recomputed


def test_a_checkpointed_step_agrees_with_pytorchs_memtracker():
    """The recompute's tensors die at their unpack, as in torch: the attribution holds no
    recompute graph (it once kept every recomputed tensor to the end of the backward)."""
    pytest.importorskip("torch.distributed._tools.mem_tracker")
    made = load(VIT6[0], dict(VIT6[1]))

    def checkpointed():
        model = made()
        blocks.apply(model, "all")
        return model

    peak, _ = memtracker_peak(checkpointed, ["3x32x32"], 64)
    sim = _vit6(64, 1, "all")
    assert abs(sim.peak_total - peak) <= 0.01 * peak, (sim.peak_total, peak)


# -- 4. the repeated blocks ------------------------------------------------------------------
@pytest.mark.parametrize("case_id, names", [
    ("vit", ["blocks.0", "blocks.1"]),
    ("bert", ["layer.0", "layer.1"]),
])
def test_repeated_blocks_are_found_by_structure(case_id, names):
    factory, _, _ = zoo(case_id)
    with torch.device("meta"):
        model = factory()
    assert [n for n, _ in blocks.repeated_blocks(model)] == names


def test_the_outermost_container_on_each_branch():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))  # leaves: not blocks

        def forward(self, x):
            return x + self.inner(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
            self.stages = nn.ModuleList([nn.Sequential(Block(), Block(), Block()), nn.Sequential(Block(), Block())])

    names = [n for n, _ in blocks.repeated_blocks(Net())]
    assert names == ["stages.0.0", "stages.0.1", "stages.0.2", "stages.1.0", "stages.1.1"]


def test_wrapping_keeps_the_state_dict_and_the_values():
    factory, _, _ = zoo("vit")
    torch.manual_seed(0)
    model = factory().eval()  # no dropout draws between the two calls
    keys = list(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    assert blocks.apply(model, "every-2") == ["blocks.0"]
    assert list(model.state_dict()) == keys
    assert torch.equal(model(x), expected)


# -- 5. refused -----------------------------------------------------------------------------
@pytest.mark.parametrize("setting, words", [
    ({"accumulation": 0}, "--accumulation must be a positive integer"),
    ({"accumulation": -2}, "got -2"),
    ({"accumulation": 1.5}, "got 1.5"),
    ({"accumulation": True}, "got True"),
    ({"checkpointing": "every-0"}, "unknown --checkpointing 'every-0'; expected all, every-K"),
    ({"checkpointing": "every-x"}, "unknown --checkpointing 'every-x'"),
    ({"checkpointing": "every-"}, "unknown --checkpointing"),
    ({"checkpointing": "some"}, "unknown --checkpointing 'some'"),
    ({"checkpointing": True}, "unknown --checkpointing True"),
])
def test_bad_settings_are_one_line(setting, words):
    factory, inputs, batch = zoo("vit")
    for call in (lambda: run_step(factory, inputs, batch, None, **setting),
                 lambda: fit(factory, inputs, batch, "cpu", **setting)):
        with pytest.raises(FitError) as err:
            call()
        assert words in str(err.value) and "\n" not in str(err.value)


def test_a_model_without_repeated_blocks_is_refused():
    factory, inputs, batch = zoo("mha")
    with pytest.raises(FitError, match=r"^--checkpointing all: CNNWithMHA has no repeated blocks [^\n]*$"):
        run_step(factory, inputs, batch, None, checkpointing="all")
    assert run_step(factory, inputs, batch, None, accumulation=2).ok  # accumulation needs no blocks


def test_selective_on_a_torch_without_it_names_the_release(monkeypatch):
    import torch.utils.checkpoint as ckpt

    monkeypatch.delattr(ckpt, "create_selective_checkpoint_contexts")
    factory, inputs, batch = zoo("vit")
    with pytest.raises(FitError, match=r"^--checkpointing selective needs torch 2\.4 or later [^\n]*$"):
        run_step(factory, inputs, batch, None, checkpointing="selective")


# -- 6. fit and the CLI ---------------------------------------------------------------------
def test_fit_runs_every_step_with_both(monkeypatch):
    """The answer's step, its conversions and the largest-batch search all run the setting."""
    from sa_profiler.advice import recommend
    from sa_profiler.models import fit as fit_module

    seen = []
    original = fit_module.run_step

    def recorded(*args, **kwargs):
        seen.append((kwargs.get("accumulation"), kwargs.get("checkpointing")))
        return original(*args, **kwargs)

    monkeypatch.setattr(fit_module, "run_step", recorded)
    monkeypatch.setattr(recommend, "largest_batch", lambda run, usable: (run(2).ok and 2, None))
    case = BY_ID["sagan-G"]
    result = fit(load(case.model, case.args), list(case.inputs), case.batch, "t4", find_max_batch=True,
                 accumulation=2, checkpointing="all")
    assert result.max_batch == 2 and len(seen) >= 4  # the step, two conversions, the search
    assert set(seen) == {(2, "all")}
    out = result.to_json()
    assert out["accumulation"] == 2 and out["checkpointing"] == "all"


def test_cli_options():
    case = BY_ID["vit"]
    out = CliRunner().invoke(cli, ["fit", *case.cli_args(), "--gpu", "cpu", "--accumulation", "2",
                                   "--checkpointing", "every-2", "--json"])
    assert out.exit_code == 0, out.output
    answer = json.loads(out.output)
    assert answer["accumulation"] == 2 and answer["checkpointing"] == "every-2"
    sim = run_step(load(case.model, case.args), list(case.inputs), case.batch, None, accumulation=2,
                   checkpointing="every-2")
    assert answer["peak_bytes"] == sim.peak_total
    plain = json.loads(CliRunner().invoke(cli, ["fit", *case.cli_args(), "--gpu", "cpu", "--json"]).output)
    assert plain["accumulation"] == 1 and plain["checkpointing"] is None


@pytest.mark.parametrize("flags, words", [
    (["--accumulation", "0"], "--accumulation must be a positive integer"),
    (["--checkpointing", "every-0"], "unknown --checkpointing 'every-0'"),
    (["--checkpointing", "every-x"], "expected all, every-K"),
    (["--checkpointing", "all"], "has no repeated blocks"),
])
def test_cli_refuses_in_one_line(flags, words):
    case = BY_ID["mha"]
    out = CliRunner().invoke(cli, ["fit", *case.cli_args(), *flags])
    assert out.exit_code == 2, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], out.output
