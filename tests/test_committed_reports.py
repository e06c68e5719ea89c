"""The reports committed under reports/ are what today's code answers: each sweep's own command
(from its meta.json) run again gives the same rows and the same largest batches. To regenerate
them: python benchmarks/report_screenshots.py (the sweeps, the fit report and the screenshots)."""

import csv
import json
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from sa_profiler.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted(p.parent for p in (ROOT / "reports").glob("*/meta.json"))
# what says where and when a report was made, not what it answers
ENVIRONMENT = {"torch_version", "host", "started", "environment", "command", "results"}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: v for k, v in r.items() if k not in ENVIRONMENT} for r in csv.DictReader(fh)]


@pytest.mark.slow
@pytest.mark.parametrize("folder", SWEEPS, ids=[p.name for p in SWEEPS])
def test_a_committed_sweep_is_what_its_command_answers_today(folder, tmp_path):
    command = json.loads((folder / "meta.json").read_text())["command"]
    args = shlex.split(command)
    assert args[0] == "sa-profile" and args[-2] == "--out"
    done = CliRunner().invoke(cli, args[1:-1] + [str(tmp_path)])
    assert done.exit_code == 0, done.output
    for name in ("results.csv", "largest.csv"):
        fresh, kept = _rows(tmp_path / name), _rows(folder / name)
        changed = [f"{k}: {a.get(k)} -> {b.get(k)}" for a, b in zip(kept, fresh) for k in a if a.get(k) != b.get(k)]
        assert len(fresh) == len(kept) and not changed, (
            f"{folder.name}/{name} is stale ({len(changed)} cells, first: {changed[:3]}); "
            "regenerate with: python benchmarks/report_screenshots.py")


def test_every_committed_sweep_is_checked():
    assert {p.name for p in SWEEPS} >= {"forum-t4", "forum-12gib"}
