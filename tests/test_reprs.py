"""In a plain Python or IPython terminal the results print the short answer, not their insides."""

import pytest

from sa_profiler.targets import gpus
from sa_profiler.advice.advise import advise
from sa_profiler.models.fit import fit, load
from sa_profiler.question import make_question


@pytest.mark.slow
def test_fit_result_repr_is_the_answer():
    r = fit(load("examples/sagan.py:Generator", {"ch": 8, "image_size": 32}), ["128"], 2, "t4", find_max_batch=True)
    text = repr(r)
    assert len(text) < 400 and "fits" in text and "largest batch" in text and "sdpa" in text


def test_advice_repr_is_the_answer():
    a = advise(make_question(gpus.lookup("t4")), 64, 32, 32, dtypes=["fp16"], modes=("train",))
    text = repr(a)
    assert len(text) < 300 and "train:" in text and "convert(model" in text


def test_sweep_result_repr_is_the_answer(tmp_path):
    from click.testing import CliRunner

    from sa_profiler.cli import cli
    from sa_profiler.report.html import SweepResult

    out = CliRunner().invoke(cli, ["sweep", "--gpu", "t4", "--impl", "sdpa", "--channels", "16", "--res", "16",
                                   "--batch", "1", "--mode", "forward", "--out", str(tmp_path / "s")])
    assert out.exit_code == 0, out.output
    text = repr(SweepResult(tmp_path / "s"))
    assert text.startswith("SweepResult(") and "1 rows" in text and "object at" not in text
