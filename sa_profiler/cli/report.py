"""`sa-profile report`: the HTML report of a sweep's results.csv (or of the folder a sweep wrote)."""

from __future__ import annotations

import click

from sa_profiler.cli.common import _fail
from sa_profiler.cli.headline import cli


@cli.command("report")
@click.argument("results", type=click.Path())
@click.option("--out", metavar="FILE", help="Where to write the HTML (default: report.html beside RESULTS).")
def report_cmd(results, out):
    """Rebuild the self-contained HTML report from a sweep's folder or its results CSV (and largest.csv
    beside it, when missing)."""
    import os

    if os.path.isdir(results):
        results = os.path.join(results, "results.csv")
    if not os.path.isfile(results):
        _fail(f"no such results file: {results!r}; expected the results.csv of a sweep, or the folder it is in")

    from sa_profiler.report.html import SweepFileError, write_report
    from sa_profiler.sweeps.largest import ensure
    from sa_profiler.sweeps.sweep import SweepError

    try:
        ensure(os.path.dirname(results) or ".")  # the answers first, under the sweep's own questions
        path = write_report(results, out, on_note=lambda note: click.echo(f"note: {note}", err=True))
    except (SweepFileError, SweepError) as err:
        _fail(str(err))
    except KeyError as err:
        _fail(f"cannot read {results!r} as a sweep results table: it has no {err.args[0]!r} column; "
              "expected the results.csv of a sweep")
    except ValueError as err:
        _fail(f"cannot read {results!r} as a sweep results table: {err}; expected the results.csv of a sweep")
    except OSError as err:
        _fail(f"cannot write {str(err.filename or out)!r}: {err.strerror or err}; expected a file in a folder "
              "you can write")
    click.echo(f"wrote {path}")
