"""Recommendations only as sure as their evidence (sa_profiler/targets/evidence.py)."""

from sa_profiler.targets import evidence

from sa_profiler.targets import gpus
from sa_profiler.advice.advise import advise
from sa_profiler.question import make_question
from sa_profiler.report.console import advice_json


def _advice(gpu):
    return advise(make_question(gpu), 128, 64, 64, dtypes=["float16"], modes=("train",), impls=["sdpa"])


def test_cudnn_is_not_forced_where_it_is_an_assumption():
    """A 12 GiB card (assumed sm86): cuDNN attention's sm86 backward for q/k 16, v 128 is neither
    open source nor measured, so torch's own choice is recommended and the forced cuDNN row is
    the alternative, with its caveat."""
    a = _advice(gpus.custom(12 * 2**30))
    rows = {r.backend: r for r in a.rows}
    assert rows["cudnn"].evidence == evidence.ASSUMPTION and "closed source" in rows["cudnn"].caveat
    assert rows["efficient"].evidence == evidence.SOURCE
    rec = a.recommendations["train"]
    assert not rec.row.options.get("backend") and rec.row.backend == "efficient"
    doc = advice_json(a)
    assert {r["backend"]: r["evidence"] for r in doc["rows"]} == {"efficient": "source", "flash": "source",
                                                                  "cudnn": "assumption"}
    # cuDNN's estimated time ranks it first here: it is the alternative, not the recommendation
    alt = doc["recommendations"]["train"]["alternative"]
    assert alt["backend"] == "cudnn" and alt["evidence"] == "assumption" and "backend='cudnn'" in alt["code"]
    assert "not forced" in rec.reason


def test_cudnn_on_the_measured_architecture():
    a = _advice(gpus.lookup("h100"))
    cudnn = [r for r in a.rows if r.backend == "cudnn"]
    assert cudnn and all(r.evidence == evidence.MEASURED for r in cudnn)
    assert a.recommendations["train"].alternative is None
