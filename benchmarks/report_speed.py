"""Writing the HTML report of a 2,000-row sweep, as a ratio to writing its CSV alone, one run.

    python benchmarks/report_speed.py

A simulated sweep of 2,000 workloads runs into a temporary folder (its time is printed too).
Then, on the same rows: the CSV written alone (every row through csv.DictWriter, then fsync,
as the sweep writes it), and the report written from that CSV (read, the page built, plotly
inlined, written), each the median of 3. The ratio says what the report costs next to the
table; the report's share of the sweep's own time says whether it stays a small part of it.
"""

from __future__ import annotations

import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sa_profiler.sweeps import largest as batch_search

from sa_profiler.targets import gpus  # noqa: E402
from sa_profiler.question import make_question  # noqa: E402
from sa_profiler.report.html import write_report  # noqa: E402
from sa_profiler.sweeps.sweep import Sweep, columns, read_rows, run  # noqa: E402

IMPLS = [("reference", {}), ("sdpa", {}), ("sdpa", {"backend": "math"}), ("chunked", {}), ("pooled", {"pool": 2})]


def main() -> None:
    spec = Sweep(make_question(gpus.lookup("t4")), IMPLS, ["float32", "float16"], ["forward", "train"], [32, 64],
                 [(r, r) for r in (8, 16, 24, 32, 40, 48, 56, 64, 80, 96)], [1, 2, 4, 8, 16])
    assert len(spec) == 2000, len(spec)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sweep"
        start = time.perf_counter()
        rows = run(spec, out)
        batch_search.write(batch_search.search(rows), out)
        swept = time.perf_counter() - start
        rows = read_rows(out / "results.csv")

        def write_csv() -> float:
            start = time.perf_counter()
            with open(Path(tmp) / "alone.csv", "w", newline="") as fh:
                writer = csv.DictWriter(fh, columns(), extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
                fh.flush()
                os.fsync(fh.fileno())
            return time.perf_counter() - start

        def write_page() -> float:
            start = time.perf_counter()
            write_report(out / "results.csv")
            return time.perf_counter() - start

        write_page()  # warm-up: imports, plotly.js read once
        csv_s = statistics.median(write_csv() for _ in range(3))
        page_s = statistics.median(write_page() for _ in range(3))
        size = (out / "report.html").stat().st_size
    print(f"{len(rows)} rows: sweep (with the batch search) {swept:.1f} s; CSV alone {csv_s * 1e3:.1f} ms; "
          f"report {page_s * 1e3:.0f} ms ({size / 2**20:.1f} MiB, plotly.js inlined)")
    print(f"report / CSV alone: {page_s / csv_s:.1f}x; report / sweep: {page_s / swept:.1%}")


if __name__ == "__main__":
    main()
