"""Strings from the user or the data are text in the HTML report: the recorded command, the
page's <title>, and the atlas cells and headers (a sweep over several devices)."""

import html

import pandas as pd
import pytest
from click.testing import CliRunner

from sa_profiler.cli import cli
from sa_profiler.report.html import atlas_table, prepare, render

HOSTILE = "<script>alert(1)</script>"
SAFE = html.escape(HOSTILE, quote=True)


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "s"
    args = ["sweep", "--batch", "1", "--channels", "16", "--res", "8", "--impl", "reference,sdpa", "--dtype", "fp32",
            "--mode", "forward", "--gpu", "t4", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return pd.read_csv(out / "results.csv")


def test_recorded_command_is_text(frame):
    page = render(prepare(frame), {"command": f"sa-profile sweep --out '{HOSTILE}'", "target": {"name": "T4"}})
    body = page.split("<body>", 1)[1]
    assert HOSTILE not in body
    assert f"sa-profile sweep --out &#x27;{SAFE}&#x27;" in body


def test_title_is_text(frame):
    page = render(prepare(frame), {"command": "sa-profile sweep", "target": {"name": HOSTILE}})
    head = page.split("</head>", 1)[0]
    title = head.split("<title>", 1)[1].split("</title>", 1)[0]
    assert HOSTILE not in title and SAFE in title
    assert HOSTILE not in page.split("<body>", 1)[1]


def test_atlas_cells_and_headers_are_text(frame):
    two = pd.concat([frame.assign(target="t4", device_name=HOSTILE),
                     frame.assign(target="h100", device_name="H100", status="<b>oom</b>")], ignore_index=True)
    table = atlas_table(prepare(two))
    assert table.count("<th>") >= 2 + 8
    assert HOSTILE not in table and "<b>oom</b>" not in table
    assert f"<th>{SAFE}</th>" in table and "&lt;b&gt;oom&lt;/b&gt;" in table
