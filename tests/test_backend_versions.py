"""Backend selection by torch version (attention/backends.py TORCH_RULES, from sdp_utils.cpp)
and the catalogue's cited figures."""

import pytest
import torch
from click.testing import CliRunner

from sa_profiler.targets import gpus
from sa_profiler.attention import backends
from sa_profiler.cli import cli

F16 = torch.float16


def _caps(card, version, cudnn=None):
    g = gpus.lookup(card)
    return backends.DeviceCaps("cuda", g.capability, backends.cudnn_preferred(g.capability, version, cudnn),
                               torch_version=version, cudnn_version=cudnn)


@pytest.mark.parametrize("version,cudnn,cc,first", [
    ("2.4.1", None, (9, 0), False),  # opt-in (#128539)
    ("2.5.0", None, (9, 0), True),  # 2.5.0 only
    ("2.5", None, (9, 0), False),  # X.Y: the latest 2.5.x (#138522)
    ("2.8.0", None, (9, 0), False),
    ("2.9.0", None, (10, 0), True),  # #162073
    ("2.9.0", None, (10, 3), False),
    ("2.10.0", 91500, (9, 0), False),  # needs a cuDNN newer than 9.15 (#169849)
    ("2.10.0", 91501, (9, 0), True),
    ("2.13.0", None, (8, 6), False),  # never on sm86
])
def test_cudnn_preference_history(version, cudnn, cc, first):
    assert backends.cudnn_preferred(cc, version, cudnn) is first


def test_sagan_c192_and_c256_on_h100_follow_the_torch_version():
    """SAGAN's head sizes (C/8, C): torch 2.11 (measured: cuDNN 9.19 ran value heads of 256 on an
    H100) picks cuDNN; from 2.13 cuDNN needs a runtime newer than 9.22 for heads above 128, so
    with the 9.19 assumed for a CPU build it is efficient; with such a runtime the backward still
    refuses unequal (24, 192) and (32, 256)."""
    for c in (192, 256):
        assert backends.select(_caps("h100", "2.11.0"), F16, c // 8, c, True) == "cudnn"
        assert backends.select(_caps("h100", "2.13.0"), F16, c // 8, c, True) == "efficient"
        new = _caps("h100", "2.13.0", 92300)
        assert backends.select(new, F16, c // 8, c, False) == "cudnn"
        assert "backward" in backends.unsupported_reason("cudnn", new, F16, c // 8, c, True)
    assert backends.unsupported_reason("cudnn", _caps("h100", "2.13.0", 92300), F16, 256, 256, True) is None
    assert backends.unsupported_reason("cudnn", _caps("h100", "2.13.0"), F16, 192, 128, True) is None  # 9.11+
    assert "<= 128" in backends.unsupported_reason("cudnn", _caps("h100", "2.7.1"), F16, 32, 256)


def test_fp16_alignment_below_sm70_is_one():
    """`minimum_gemm_alignment`: no tensor cores below sm70, so any head size runs; 8 from sm70."""
    assert backends.unsupported_reason("efficient", _caps("p100", "2.13.0"), F16, 12, 100) is None
    assert "divisible by 8" in backends.unsupported_reason("efficient", _caps("t4", "2.13.0"), F16, 12, 100)


def test_cli_torch_version():
    runner = CliRunner()
    args = ["--gpu", "h100", "--shape", "256x32x32", "--mode", "train", "--dtype", "fp16", "--impl", "sdpa", "--json"]
    import json

    old = json.loads(runner.invoke(cli, args + ["--torch-version", "2.11"]).output)
    new = json.loads(runner.invoke(cli, args + ["--torch-version", "2.13"]).output)
    assert old["recommendation"]["backend"] == "cudnn" and new["recommendation"]["backend"] == "efficient"
    assert any("torch 2.11" in a for a in old["assumptions"])
    bad = runner.invoke(cli, args + ["--torch-version", "1.13"])
    assert bad.exit_code == 2 and "2.4 to 2.14" in bad.output and "Traceback" not in bad.output


def test_every_card_is_cited():
    for g in gpus.CATALOGUE.values():
        src = g.provenance()
        assert all(src.values()), g.key
        assert g.smem_per_block == gpus.SMEM_PER_BLOCK_OPTIN[g.capability]
        assert g.sms > 0
    for name in ("titan xp", "rtx-2060-12gb", "rtx-3080-12gb", "4070", "4070 super", "4070 ti", "4060 ti", "4080",
                 "a4000", "a6000", "l40s", "kaggle", "colab-l4", "kaggle-p100"):
        gpus.lookup(name)


def test_cudnn_dropout_gate_with_caps_that_name_no_torch():
    # DeviceCaps without a torch version answer for the assumed (running) torch
    import torch

    from sa_profiler.attention import backends

    q = torch.empty(2, 4, 128, 64, device="meta", dtype=torch.float16)
    call = backends.Call.of(q, q, q, None, 0.1)
    assert backends.refusal("cudnn", backends.DeviceCaps("cuda", (9, 0), torch_version="2.11"), call) is None
    assert "1/16" in backends.refusal("cudnn", backends.DeviceCaps("cuda", (9, 0), torch_version="2.13"), call)


def _with_row(first, key, **values):
    """TORCH_RULES with the row (`key`, `first`) given other thresholds."""
    import dataclasses

    rows = [r for r in backends.TORCH_RULES if (r.key, r.first) == (key, first)]
    assert len(rows) == 1, (key, first)
    return tuple(dataclasses.replace(r, values={**r.values, **values}) if r is rows[0] else r
                 for r in backends.TORCH_RULES)


def _cuda(cc, version, cudnn=None, preferred=False):
    return backends.DeviceCaps("cuda", cc, preferred, torch_version=version, cudnn_version=cudnn)


# per row of TORCH_RULES: other thresholds for it, and a selection question whose answer they change
ROW_PROBES = {
    ("cudnn_first", "2.4"): ({"on": ((8, 0),)}, lambda: backends.cudnn_preferred((8, 0), "2.6.0", None)),
    ("cudnn_first", "2.5.0"): ({"on": ()}, lambda: backends.cudnn_preferred((9, 0), "2.5.0", None)),
    ("cudnn_first", "2.9"): ({"on": ((9, 0),)}, lambda: backends.cudnn_preferred((10, 0), "2.9.0", None)),
    ("cudnn_first", "2.10"): ({"cudnn": 92000}, lambda: backends.cudnn_preferred((9, 0), "2.11.0", None)),
    ("cudnn_head_dim", "~2.5"): ({"limit": 64}, lambda: backends.select(_cuda((9, 0), "2.6.0", preferred=True),
                                                                       F16, 96, 96)),
    ("cudnn_head_dim", "~2.8"): ({"wide_cudnn": 99999}, lambda: backends.select(
        _cuda((9, 0), "2.8.0", preferred=True), F16, 256, 256)),
    ("cudnn_head_dim", "~2.13"): ({"backward_shapes": ((192, 128),)}, lambda: backends.select(
        _cuda((9, 0), "2.13.0", 92300, preferred=True), F16, 256, 256, requires_grad=True)),
    ("cudnn_dropout", "~2.12"): ({"steps": 10}, lambda: backends.select_call(
        _cuda((9, 0), "2.12.0", preferred=True), backends.Call(F16, (1, 1, 4, 64), (1, 1, 4, 64), (1, 1, 4, 64),
                                                                dropout=0.125))),
    ("efficient_alignment", "all"): ({"half": 16}, lambda: backends.select(_cuda((7, 5), "2.14.0"), F16, 8, 8)),
}


def test_every_row_of_torch_rules_has_a_probe():
    assert sorted(ROW_PROBES) == sorted((r.key, r.first) for r in backends.TORCH_RULES)


@pytest.mark.parametrize("key,first", sorted(ROW_PROBES))
def test_each_row_of_torch_rules_is_read_by_the_selection(key, first, monkeypatch):
    """Other thresholds in one row give another answer: the selection reads the row, not a copy."""
    values, ask = ROW_PROBES[(key, first)]
    before = ask()
    monkeypatch.setattr(backends, "TORCH_RULES", _with_row(first, key, **values))
    assert ask() != before, (key, first, before)
