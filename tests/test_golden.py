"""Today's headline answers against the pinned table (tests/golden/answers.json).

A change that moves any answer (bytes, batches, fits, backends, time estimates) fails here until
the table is regenerated with `python tests/golden/regen.py`, in a commit that says why the
numbers moved. The README's figures are checked against the same table.
"""

import importlib.util
import json
import re
from pathlib import Path

import pytest

from sa_profiler.units import format_bytes

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("golden_regen", HERE / "golden" / "regen.py")
regen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regen)
GOLDEN = json.loads(regen.GOLDEN.read_text())
README = (HERE.parent / "README.md").read_text()


# Answers that depend on the torch running the simulation, compared from the torch the table was
# made with (regen.TORCH: 2.14 gives the same); every other answer on every torch of the range.
import torch  # noqa: E402

from sa_profiler.torch_compat import version_tuple  # noqa: E402

BY_RUNNING_TORCH = {
    # the time model charges every op its dispatch; releases decompose the same step into
    # different numbers of view ops (torch 2.8 slices where 2.13 views): a few per cent
    "time_s": "the time estimate counts the running torch's view ops",
}


def _by_running_torch(key: str) -> bool:
    """An answer that is the running torch's own: a field of BY_RUNNING_TORCH; a CPU target's
    (its step runs this torch's CPU kernels: simulated = measured); SDPA's math backend (a
    composite of the running torch: float32 for half inputs and `_safe_softmax` from 2.5,
    the input dtype and `_softmax` in 2.4)."""
    return key in BY_RUNNING_TORCH or key.endswith(" cpu") or "backend=math" in key


SAME_TORCH = version_tuple(torch.__version__) >= version_tuple(regen.TORCH)


def _moved(pinned, today, path=""):
    """The answers that differ, as 'path: pinned -> today' lines."""
    if isinstance(pinned, dict) and isinstance(today, dict):
        out = []
        for k in sorted(set(pinned) | set(today), key=str):
            if not SAME_TORCH and _by_running_torch(str(k)):
                continue
            out += _moved(pinned.get(k, "<absent>"), today.get(k, "<absent>"), f"{path}/{k}")
        return out
    return [] if pinned == today else [f"{path}: {pinned!r} -> {today!r}"]


HINT = "\nif the move is intended: python tests/golden/regen.py, and say why in the commit"


def test_engine_answers_are_pinned():
    moved = _moved(GOLDEN["engine"], regen.engine_answers())
    assert not moved, "\n".join(moved[:40]) + HINT


def test_rule_answers_are_pinned():
    """Every rule's temporaries (bytes, shape, dtype, note) for the probes' inputs and synthetic ones."""
    moved = _moved(GOLDEN["rules"], regen.rule_answers())
    assert not moved, "\n".join(moved[:40]) + HINT


@pytest.mark.parametrize("name", list(regen.COMMANDS))
def test_command_answers_are_pinned(name):
    today = regen.answers_for(name)
    assert GOLDEN["commands"][name]["command"] == today["command"]
    moved = _moved(GOLDEN["commands"][name]["answers"], today["answers"])
    assert not moved, "\n".join(moved[:40]) + HINT


def test_the_table_covers_the_forum_case():
    for name, dtypes in (("forum on a T4", {"float32", "float16"}),
                         ("forum on a 12 GiB card", {"float32", "float16", "bfloat16"})):
        rows = GOLDEN["commands"][name]["answers"]["rows"]
        assert {k.split()[-2] for k in rows} == dtypes
        assert {k.split()[-1] for k in rows} == {"forward", "train"}
        assert {k.split("[")[0].split()[0] for k in rows} == {"reference", "sdpa", "chunked", "pooled"}


def test_readme_headline_figures_are_the_pinned_ones():
    """The README's headline table and fit sentence say what the pinned answers say."""
    head = GOLDEN["commands"]["README headline"]["answers"]
    sdpa = head["rows"]["sdpa float16 train"]
    line = next(ln for ln in README.splitlines() if ln.startswith(" sdpa (auto)"))
    cells = line.split()
    assert " ".join(cells[4:6]) == format_bytes(sdpa["peak_bytes_per_image"], 1), line
    assert cells[6] == str(sdpa["max_batch"]), line
    assert f"batch {head['recommendations']['train']['batch']}:" in README
    forum = GOLDEN["commands"]["README fit forum_cnn"]["answers"]
    text = " ".join(README.split())
    sentence = re.search(r"`forum_cnn`[^.]*?[.:,] [^`]*?needs (\d+(?:\.\d+)? [KMG]iB)[^`]*? and (\d+(?:\.\d+)? [KMG]iB) once "
                         r"converted", text)
    assert sentence, "the README's forum_cnn sentence moved"
    assert sentence.group(1) == format_bytes(forum["peak_bytes"], 1)
    assert sentence.group(2) == format_bytes(forum["conversions"]["sdpa"]["peak_bytes"], 0)
