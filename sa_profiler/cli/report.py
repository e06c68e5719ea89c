"""`sa-profile report`: the HTML report of a sweep's results.csv."""

from __future__ import annotations

import click

from sa_profiler.cli.common import _fail
from sa_profiler.cli.headline import cli


@cli.command("report")
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--out", metavar="FILE", help="Where to write the HTML (default: report.html beside RESULTS).")
def report_cmd(results, out):
    """Rebuild the self-contained HTML report from a results CSV (and largest.csv beside it, when missing)."""
    import os

    from sa_profiler.report.html import write_report

    if not os.path.isfile(results):
        _fail(f"no such results file: {results!r}; expected the results.csv of a sweep")
    try:
        path = write_report(results, out, on_note=lambda note: click.echo(f"note: {note}", err=True))
    except KeyError as err:
        _fail(f"cannot read {results!r} as a sweep results table: it has no {err.args[0]!r} column; "
              "expected the results.csv of a sweep")
    except ValueError as err:
        _fail(f"cannot read {results!r} as a sweep results table: {err}; expected the results.csv of a sweep")
    click.echo(f"wrote {path}")
