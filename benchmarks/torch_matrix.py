"""The answers of this checkout on each torch of the supported range, side by side.

    python benchmarks/torch_matrix.py                        # the running torch only
    python benchmarks/torch_matrix.py --torch 2.4.1 --torch 2.8.0 --tests --out reports/compat

For each torch: the running interpreter's, and one virtual environment per `--torch X.Y.Z`
(made under --venvs on first use: `pip install torch==X.Y.Z`, then this checkout, editable),
it prints
- the headline answer (`sa-profile --gpu-mem 12G --shape 128x256x256` and `--gpu t4`): the
  recommendation of each mode and how many rows could not be computed;
- every zoo model's CPU training step, simulated against measured under the tracker (bytes);
- `fit --amp fp16` on a T4 for each model with SAGAN layers: every conversion's status;
- with --tests, the compatibility subset of the test suite (COMPAT_TESTS) and its counts.
It exits 1 when any of these is not as it should be (an error row, a simulated step that is
not the measured one, a conversion that failed, a failed test), so CI runs it as its
compatibility step. --out writes torch-matrix.md and torch-matrix.json there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMPAT_TESTS = ["tests/test_torch_compat.py", "tests/test_zoo.py", "tests/test_golden.py", "tests/test_recompute.py",
                "tests/test_fit_engine.py", "tests/test_backend_versions.py", "tests/test_parallel.py"]
HEADLINES = {"12G": ["--gpu-mem", "12G", "--shape", "128x256x256", "--json"],
             "t4": ["--gpu", "t4", "--shape", "128x256x256", "--json"]}


def probe() -> dict:
    """This interpreter's answers (run inside each environment)."""
    import torch
    from click.testing import CliRunner

    sys.path.insert(0, str(REPO / "tests"))
    os.chdir(REPO)
    from zoo_cases import MODELS

    from sa_profiler.cli import cli
    from sa_profiler.models.fit import FitError, fit, load, run_step

    start = time.perf_counter()
    out = {"torch": torch.__version__, "python": sys.version.split()[0], "headline": {}, "zoo": {}, "amp": {}}
    for name, args in HEADLINES.items():
        run = CliRunner().invoke(cli, args)
        if run.exit_code != 0:
            out["headline"][name] = {"exit": run.exit_code, "error": run.output.strip().splitlines()[-1:]}
            continue
        doc = json.loads(run.stdout)
        out["headline"][name] = {"exit": 0, "rows": len(doc["rows"]),
                                 "errors": [f"{r['label']} {r['dtype']} {r['mode']}: {r['message']}"
                                            for r in doc["rows"] if r["status"] == "error"],
                                 "recommendation": _rec(doc["recommendation"])}
    for case in MODELS:
        try:
            sim = run_step(load(case.model, case.args), list(case.inputs), case.batch, None)
            real = run_step(load(case.model, case.args), list(case.inputs), case.batch, None, device="cpu")
            out["zoo"][case.id] = {"simulated": sim.peak_total, "measured": real.peak_total,
                                   "equal": sim.status == real.status == "ok" and sim.peak_total == real.peak_total}
        except FitError as err:
            out["zoo"][case.id] = {"simulated": None, "measured": str(err), "equal": False}
    for case in [c for c in MODELS if c.sagan]:
        try:
            result = fit(load(case.model, case.args), list(case.inputs), case.batch, "t4", amp="fp16", timeline=False)
        except FitError as err:
            out["amp"][case.id] = {"status": f"error: {err}"}
            continue
        out["amp"][case.id] = {"status": result.step.status,
                               **{label: s.status + (f": {s.message}" if s.status != "ok" else "")
                                  for label, s in result.conversions.items()}}
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def _rec(rec: dict) -> str:
    if rec.get("impl") is None:
        return f"none ({rec.get('reason')})"
    return f"{rec['code']} {rec['dtype']} batch {rec['batch']}"


def environment(version: str, venvs: Path) -> Path:
    """The interpreter of an environment with torch `version` and this checkout (made if missing)."""
    root = venvs / f"torch-{version}"
    python = root / "bin" / "python"
    if not python.exists() or _torch_of(python) != version:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run(pip + [f"torch=={version}", "pytest>=7", "hypothesis>=6"], check=True)
        subprocess.run(pip + ["-e", str(REPO)], check=True)
    if _checkout_of(python) != REPO.resolve():  # an environment kept from another clone: this one
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "-e", str(REPO)], check=True)
    return python


def _checkout_of(python: Path) -> Path | None:
    """The checkout whose sa_profiler `python` imports (from outside any checkout), if any."""
    run = subprocess.run([str(python), "-c", "import os, sa_profiler; print(os.path.dirname(os.path.dirname("
                          "os.path.realpath(sa_profiler.__file__))))"], capture_output=True, text=True, cwd="/")
    return Path(run.stdout.strip()).resolve() if run.returncode == 0 else None


def _torch_of(python: Path) -> str | None:
    run = subprocess.run([str(python), "-c", "import torch; print(torch.__version__.split('+')[0])"],
                         capture_output=True, text=True)
    return run.stdout.strip() if run.returncode == 0 else None


def run_probe(python: str) -> dict:
    run = subprocess.run([python, __file__, "--probe"], capture_output=True, text=True, cwd=REPO)
    if run.returncode != 0:
        return {"torch": _torch_of(Path(python)) or "?", "failed": (run.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(run.stdout)


def run_tests(python: str) -> dict:
    start = time.perf_counter()
    run = subprocess.run([python, "-m", "pytest", "-q", "-m", "", "-p", "no:cacheprovider", *COMPAT_TESTS],  # slow ones too
                         capture_output=True, text=True, cwd=REPO)
    last = (run.stdout.strip().splitlines() or [""])[-1]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|xfailed)", last)}
    failed = [ln.split(" ", 1)[1].split(" - ")[0] for ln in run.stdout.splitlines() if ln.startswith("FAILED ")]
    return {"exit": run.returncode, "counts": counts, "failed": failed, "seconds": round(time.perf_counter() - start)}


def problems(row: dict) -> list[str]:
    """What is not as it should be for one torch."""
    if "failed" in row and isinstance(row["failed"], str):
        return [f"probe failed: {row['failed']}"]
    out = []
    for name, h in row["headline"].items():
        if h["exit"] != 0:
            out.append(f"headline {name} exited {h['exit']}: {h['error']}")
        else:
            out += [f"headline {name}: error row {e}" for e in h["errors"]]
            if h["recommendation"].startswith("none"):
                out.append(f"headline {name}: no recommendation")
    out += [f"zoo {k}: simulated {v['simulated']} != measured {v['measured']}" for k, v in row["zoo"].items()
            if not v["equal"]]
    out += [f"amp {k} {label}: {status}" for k, v in row["amp"].items() for label, status in v.items()
            if status != "ok"]
    tests = row.get("tests")
    if tests and tests["exit"] != 0:
        out.append(f"compat tests: {tests['counts']} {tests['failed'][:5]}")
    return out


def markdown(rows: list[dict]) -> str:
    lines = ["| torch | headline 12G (recommended for training) | headline T4 | zoo CPU steps sim = measured | "
             "fit --amp fp16 conversions ok | compat tests |", "|---|---|---|---|---|---|"]
    for row in rows:
        if isinstance(row.get("failed"), str):
            lines.append(f"| {row['torch']} | probe failed: {row['failed']} | | | | |")
            continue
        heads = []
        for name in HEADLINES:
            h = row["headline"][name]
            heads.append(f"exit {h['exit']}" if h["exit"] else
                         f"{h['recommendation']}; {len(h['errors'])} error rows of {h['rows']}")
        zoo = f"{sum(v['equal'] for v in row['zoo'].values())} of {len(row['zoo'])}"
        amp = f"{sum(all(s == 'ok' for s in v.values()) for v in row['amp'].values())} of {len(row['amp'])}"
        tests = row.get("tests")
        counts = (", ".join(f"{n} {k}" for k, n in tests["counts"].items()) + f" ({tests['seconds']} s)") if tests else "-"
        lines.append(f"| {row['torch']} | {heads[0]} | {heads[1]} | {zoo} | {amp} | {counts} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--torch", action="append", default=[], metavar="X.Y.Z",
                        help="also this torch, in its own environment (repeatable)")
    parser.add_argument("--venvs", default=str(Path.home() / ".cache" / "sa-profiler-torch"), metavar="DIR",
                        help="where the environments live (default: %(default)s)")
    parser.add_argument("--tests", action="store_true", help="run the compatibility subset of the tests in each")
    parser.add_argument("--skip-running", action="store_true",
                        help="leave out the running interpreter's torch (CI tests it with the full suite)")
    parser.add_argument("--out", metavar="DIR", help="write torch-matrix.md and torch-matrix.json there")
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe()))
        return 0
    pythons = [] if args.skip_running else [sys.executable]
    for version in args.torch:
        print(f"environment for torch {version} ...", file=sys.stderr, flush=True)
        pythons.append(str(environment(version, Path(args.venvs))))
    rows = []
    for python in pythons:
        print(f"probing {python} ...", file=sys.stderr, flush=True)
        row = run_probe(python)
        if args.tests:
            row["tests"] = run_tests(python)
        rows.append(row)
    table = markdown(rows)
    print(table)
    bad = {row["torch"]: problems(row) for row in rows}
    for version, found in bad.items():
        for line in found:
            print(f"torch {version}: {line}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "torch-matrix.md").write_text(
            "Made by `python benchmarks/torch_matrix.py " + " ".join(f"--torch {v}" for v in args.torch)
            + (" --tests" if args.tests else "") + f" --out {args.out}`.\n\n" + table)
        (out / "torch-matrix.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 1 if any(bad.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
