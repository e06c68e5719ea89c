"""The headline command through click's CliRunner: answers, JSON, and every bad input."""

import json

import pytest
from click.testing import CliRunner

from sa_profiler import __version__

from sa_profiler.targets import gpus
from sa_profiler.cli import cli
from sa_profiler.engine import Workload, simulate
from sa_profiler.advice.recommend import total_bytes
from sa_profiler.question import make_question

GiB = 2**30


def run(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def forum():
    result = run("--gpu-mem", "12G", "--shape", "128x256x256", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_forum_case_reference_does_not_fit_even_one_image(forum):
    ref = [r for r in forum["rows"] if r["impl"] == "reference"]
    assert {r["mode"] for r in ref} == {"forward", "train"}
    for r in ref:
        assert r["max_batch"] == 0 and not r["fits"]
    fwd32 = next(r for r in ref if r["mode"] == "forward" and r["dtype"] == "float32")
    assert fwd32["peak_bytes_per_image"] >= 32 * GiB  # energy + attention, 16 GiB each


@pytest.mark.parametrize("mode", ["forward", "train"])
def test_forum_case_recommends_an_efficient_layer_that_fits(forum, mode):
    rec = forum["recommendations"][mode]
    assert rec["impl"] in ("sdpa", "chunked") and rec["batch"] > 0
    assert rec["code"].startswith(f'convert(model, "{rec["impl"]}"')
    # the simulator confirms: that batch fits with the headroom
    target = make_question(gpus.custom(12 * GiB))
    w = Workload(rec["impl"], rec["batch"], 128, 256, 256, rec["dtype"], mode, target.key, rec["options"])
    assert total_bytes(simulate(w)) <= forum["target"]["usable_bytes"] == target.usable
    over = simulate(w.with_batch(rec["batch"] + 1))
    assert total_bytes(over) > target.usable  # and it is the largest


def test_json_rows_agree_with_the_engine(forum):
    for row in forum["rows"][:6]:
        w = Workload(row["impl"], 1, 128, 256, 256, row["dtype"], row["mode"], forum["target"]["key"], row["options"])
        rec = simulate(w)
        assert row["peak_bytes_per_image"] == total_bytes(rec)
        assert row["backend"] == rec.backend
    assert {"rows", "recommendation", "target", "assumptions"} <= set(forum)
    for key in ("impl", "backend", "dtype", "mode", "peak_bytes_per_image", "max_batch", "time_s", "fits", "source"):
        assert key in forum["rows"][0]
    assert forum["target"]["usable_bytes"] == 12 * GiB - forum["target"]["context_bytes"] - forum["target"]["headroom_bytes"]


def test_table_output_names_recommendation_and_why():
    result = run("--gpu", "t4", "--shape", "128x256x256", "--mode", "train", "--dtype", "fp16")
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "Tesla T4" in out and "Recommended for train" in out and 'convert(model, "sdpa"' in out
    assert "Why" in out and "65536x65536" in out and "5 x B x N^2" in out
    assert "bfloat16" not in out


def test_default_dtypes_skip_bf16_on_t4_with_a_note():
    result = run("--gpu", "t4", "--shape", "64x32x32", "--json")
    data = json.loads(result.stdout)
    assert {r["dtype"] for r in data["rows"]} == {"float32", "float16"}
    assert any("bfloat16 skipped" in s and "no bfloat16" in s for s in data["skipped"])


def test_given_batch_is_checked():
    data = json.loads(run("--gpu-mem", "15360MiB", "--shape", "64x64x64", "--batch", "32", "--json").stdout)
    assert data["shape"]["batch"] == 32
    assert all(r["batch"] == 32 for r in data["rows"] if r["status"] == "ok")
    ref = next(r for r in data["rows"] if r["impl"] == "reference" and r["mode"] == "train" and r["dtype"] == "float32")
    assert ref["fits"] == (ref["peak_bytes_at_batch"] <= data["target"]["usable_bytes"])


def test_batch_in_shape():
    data = json.loads(run("--gpu", "a100", "--shape", "8x64x32x32", "--json", "--mode", "forward").stdout)
    assert data["shape"]["batch"] == 8


@pytest.mark.slow
def test_nothing_fits_is_an_answer_with_alternatives():
    result = run("--gpu", "t4", "--shape", "8192x512x512", "--mode", "train", "--dtype", "fp32", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["recommendation"]["impl"] is None
    assert data["alternatives"] and any("resolution" in a["what"] for a in data["alternatives"])
    text = run("--gpu", "t4", "--shape", "8192x512x512", "--mode", "train", "--dtype", "fp32").output
    assert "Alternatives" in text


def test_gpus_and_doctor_and_help():
    out = run("gpus").output
    assert "Tesla T4" in out and "H100" in out
    assert len(json.loads(run("gpus", "--json").stdout)) == len(gpus.CATALOGUE)
    doc = run("doctor")
    assert doc.exit_code == 0 and "torch" in doc.output and "--engine auto" in doc.output
    help_text = run("--help").output
    assert "binary" in help_text and "--gpu-mem" in help_text
    assert __version__ in run("--version").output


BAD = [
    (["--shape", "128x256", "--gpu", "t4"], "cannot read shape '128x256': expected CxHxW"),
    (["--shape", "0x256x256", "--gpu", "t4"], "has a dimension <= 0"),
    (["--shape", "128x-1x256", "--gpu", "t4"], "has a dimension <= 0"),
    (["--shape", "abc", "--gpu", "t4"], "cannot read shape 'abc'"),
    (["--shape", "128x64x64", "--gpu-mem", "12X"], "cannot read memory size '12X': expected a size such as 12G"),
    (["--shape", "128x64x64", "--gpu-mem", "-1G"], "cannot read memory size '-1G'"),
    (["--shape", "128x64x64", "--gpu-mem", "0G"], "memory size '0G' must be positive"),
    (["--shape", "128x64x64", "--gpu", "t5"], "unknown GPU 't5'; did you mean t4"),
    (["--shape", "128x64x64", "--gpu", "t4", "--batch", "0"], "--batch must be a positive integer"),
    (["--shape", "128x64x64", "--gpu", "t4", "--batch", "x"], "'x' is not a valid integer"),
    (["--shape", "128x64x64", "--gpu", "t4", "--impl", "fast"], "unknown implementation 'fast'"),
    (["--shape", "128x64x64", "--gpu", "t4", "--impl", "chunked:flash"], "a backend goes with sdpa only"),
    (["--shape", "128x64x64", "--gpu", "t4", "--dtype", "fp8"], "unknown dtype 'fp8'; expected fp32, fp16, bf16"),
    (["--shape", "128x64x64", "--gpu", "t4", "--dtype", "bf16"], "bfloat16 cannot run on this target: Tesla T4"),
    (["--shape", "128x64x64", "--gpu", "t4", "--mode", "eval"], "'eval' is not one of"),
    (["--shape", "128x64x64", "--gpu", "t4", "--gpu-mem", "12G"], "either --gpu NAME or --gpu-mem SIZE"),
    (["--shape", "128x64x64", "--gpu", "t4", "--headroom", "lots"], "cannot read --headroom 'lots'"),
    (["--shape", "4x64x64", "--gpu", "t4"], "the classic layer needs C >= 8"),
    (["--shape", "2x128x64x64", "--gpu", "t4", "--batch", "3"], "--batch 3 contradicts the batch 2"),
    (["--bogus"], "No such option"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2(args, message):
    result = run(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sa-profile: error: "), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.output
