"""Mutation testing of the modules whose mistakes change an answer, with mutmut.

    pip install -e ".[mutation]"
    python benchmarks/mutation.py                 # every module below, in order (hours on 2 cores)
    python benchmarks/mutation.py engine --jobs 2 # one module
    python benchmarks/mutation.py engine --files layouts,timing --jobs 2
                                                  # some files of a module, merged into its score

Each module runs in its own snapshot of the committed tree (`git archive HEAD`), with only the
test files that exercise it, under `nice`. mutmut forks one process per mutant and runs the
tests that reach the mutated function, fastest first. The score (killed / total, and every
surviving mutant's diff) goes to reports/mutation/<module>.json and reports/mutation/README.md
is rebuilt from the JSON files present. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "reports" / "mutation"

# module -> (paths to mutate, the test files that exercise it)
MODULES = {
    # tests/test_engine.py's CPU simulate == measure checks are left out: the tracker is shared,
    # so they cannot kill a tracker mutant, and they cost 40 s per surviving mutant
    "engine": (["sa_profiler/engine/", "sa_profiler/attention/memory_format.py", "sa_profiler/torch_compat/lazy.py",
                "sa_profiler/torch_compat/plain_shapes.py"],
               ["tests/test_records_and_workloads.py", "tests/test_oracles.py", "tests/test_rules.py",
                "tests/test_rule_coverage.py", "tests/test_golden.py::test_engine_answers_are_pinned",
                "tests/test_golden.py::test_rule_answers_are_pinned", "tests/test_mem_eff.py",
                "tests/test_conv_layouts.py", "tests/test_mem_eff_launcher.py", "tests/test_time_model_ops.py",
                "tests/test_lazy_wrappers.py", "tests/test_measure_cpu.py", "tests/test_simulation_rate.py",
                "tests/test_reduce.py", "tests/test_workspaces.py", "tests/test_amp_cache.py",
                "tests/test_plain_shapes.py", "tests/test_meta_memo.py", "tests/test_plain_shape_helpers.py"]),
    # test_engine.py left out of backends: 13 s a run, and its selection calls are the golden table's
    "backends": (["sa_profiler/attention/backends.py"],
                 ["tests/test_backend_selection.py", "tests/test_attention.py", "tests/test_backend_versions.py",
                  "tests/test_golden.py::test_engine_answers_are_pinned"]),
    # test_cli.py and the golden whole-model fits (30 s) left out: test_batch_search_and_ranking.py holds
    # the search, the candidates and the ranking to hand-worked answers
    "recommend": (["sa_profiler/advice/recommend.py"],
                  ["tests/test_batch_search_and_ranking.py", "tests/test_user_strings.py", "tests/test_evidence.py"]
                  + [f"tests/test_golden.py::test_command_answers_are_pinned[{case}]" for case in (
                      "forum on a T4", "forum on a 12 GiB card", "README headline", "README fit forum_cnn")]),
    # 2915 mutants: the page's own tests on hand-made results, and the sweep's escaping checks;
    # the sweeps that run the CLI (3 s each) left out
    "html": (["sa_profiler/report/html.py"],
             ["tests/test_sweep_report_cells.py", "tests/test_html_escaping.py",
              "tests/test_sweep.py::test_hostile_strings_are_escaped",
              "tests/test_sweep.py::test_atlas_report_has_a_column_per_device"]),
    # the answer cache: what it reads back is proven whole before a byte is printed
    "answer_cache": (["sa_profiler/advice/answer_cache.py"],
                     ["tests/test_answer_cache.py", "tests/test_answer_cache_keys.py",
                      "tests/test_answer_cache_damage.py"]),
    # options judged before torch loads, and the names they are judged against
    "checks": (["sa_profiler/cli/checks.py", "sa_profiler/names.py"],
               ["tests/test_options_before_torch.py", "tests/test_bad_inputs.py"]),
    # a sweep's files read back (report, resume) and the folder lock
    "sweep_files": (["sa_profiler/report/sweep_frame.py", "sa_profiler/sweeps/lock.py"],
                    ["tests/test_sweep_files.py", "tests/test_sweep_report_cells.py", "tests/test_bad_inputs.py",
                     "tests/test_sweep.py"]),
    # which module made each allocation, and which are attention (fit's breakdowns)
    "attribution": (["sa_profiler/engine/attribution.py"],
                    ["tests/test_planted_bugs.py", "tests/test_hostile_names.py", "tests/test_fit.py",
                     "tests/test_zoo.py"]),
    # the question's value: built, checked, written whole and read back; the sweep's batch search under it
    # the gloo processes left out (seconds each per mutant): the fake-group steps, views and refusals
    "parallel": (["sa_profiler/models/parallel.py"],
                 [
                  "tests/test_parallel.py::test_ddp_at_world_size_one_is_fit_plus_its_buckets",
                  "tests/test_parallel.py::test_fsdp_shards_shrink_as_one_over_n",
                  "tests/test_parallel.py::test_world_size_sixty_four_costs_what_two_does",
                  "tests/test_parallel.py::test_a_cuda_target_answers_per_rank_with_the_cards_allocator",
                  "tests/test_parallel.py::test_amp_is_fsdp2s_mixed_precision_policy",
                  "tests/test_parallel.py::test_resharding_after_forward_frees_the_gathered_blocks",
                  "tests/test_parallel.py::test_fit_views_say_per_rank_and_the_global_batch",
                  "tests/test_parallel.py::test_one_device_answers_carry_no_rank_line",
                  "tests/test_parallel.py::test_bad_parallel_options_are_one_line",
                  "tests/test_parallel.py::test_a_strategy_the_installed_torch_lacks_is_refused_before_torch",
                  "tests/test_parallel.py::test_the_python_api_refuses_the_same",
                  "tests/test_parallel.py::test_a_process_group_already_there_is_one_line",
                  "tests/test_parallel.py::test_ddp_refuses_parameters_the_loss_does_not_use_as_torch_does",
                  "tests/test_parallel.py::test_plan_over_ranks_tries_ddp_and_fsdp2_each_as_fit_runs_it",
                  "tests/test_parallel.py::test_plan_refuses_a_batch_the_ranks_cannot_split",
                  "tests/test_parallel.py::test_ddp_rebuilds_its_buckets_on_meta_as_on_the_cpu",
                  "tests/test_parallel.py::test_ddp_keeps_its_logging_data_on_meta",
                  "tests/test_parallel.py::test_ddp_passes_inputs_given_by_name",
                  "tests/test_parallel.py::test_fsdp_shards_each_block_then_the_root_on_one_mesh",
                  "tests/test_parallel.py::test_the_rank_line_and_the_assumptions_word_for_word",
                  "tests/test_parallel.py::test_which_strategies_run_here"]),
    "question": (["sa_profiler/question.py", "sa_profiler/sweeps/largest.py"],
                 ["tests/test_question.py", "tests/test_custom_cards.py", "tests/test_sweep_report_cells.py"]),
    # every console view: names and numbers whole at any width
    "console": (["sa_profiler/report/console.py"],
                ["tests/test_narrow_terminals.py", "tests/test_console_width.py", "tests/test_user_strings.py",
                 "tests/test_hostile_names.py", "tests/test_fit_reasons.py", "tests/test_cli.py"]),
}
# mutmut exit-code statuses that count as killed / not killed
KILLED = {"killed", "timeout", "caught by type check"}


def _config(paths: list[str], tests: list[str]) -> str:
    quoted = lambda xs: "[" + ", ".join(json.dumps(x) for x in xs) + "]"
    globs = [p + "*" if p.endswith("/") else p for p in paths]
    return ("\n[tool.mutmut]\n"
            'source_paths = ["sa_profiler"]\n'
            f"only_mutate = {quoted(globs)}\n"
            f"pytest_add_cli_args_test_selection = {quoted(tests)}\n"
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-m", "not cuda and not ray and not slow", '
            '"--deselect", "tests/test_engine.py::test_tracker_sees_what_the_process_allocates"]\n'
            'also_copy = ["reports", "examples", "benchmarks", "README.md", "docs"]\n'
            "use_git_change_detection = false\n")


def _statuses(work: Path) -> dict[str, str]:
    """Mutant -> status, from the files mutmut keeps beside each mutated module."""
    from mutmut.stats import status_by_exit_code

    out = {}
    for meta in sorted((work / "mutants").rglob("*.py.meta")):
        for mutant, code in json.loads(meta.read_text()).get("exit_code_by_key", {}).items():
            out[mutant] = status_by_exit_code[code]
    return out


# files of a module mutated first (the rest of the folder follows, by name)
PRIORITY = ["tracker", "allocator", "simulate", "step", "targets", "workload", "rules"]


def _files(paths: list[str], only: list[str] | None = None) -> list[str]:
    """The module's source files (relative paths), or those of them named in `only` (stems)."""
    files = []
    for p in paths:
        files += sorted(str(f.relative_to(ROOT)) for f in (ROOT / p).glob("*.py")) if p.endswith("/") else [p]
    files = [f for f in files if not f.endswith("__init__.py")]
    if only is not None:
        unknown = set(only) - {Path(f).stem for f in files}
        if unknown:
            raise ValueError(f"no file {sorted(unknown)[0]!r} in {', '.join(paths)}; "
                             f"expected stems of {', '.join(Path(f).name for f in files)}")
        files = [f for f in files if Path(f).stem in only]
    return files


def _globs(files: list[str]) -> list[str]:
    """mutmut mutant-name patterns, one per file, most important first."""
    files = list(files)
    files.sort(key=lambda f: (PRIORITY.index(Path(f).stem) if Path(f).stem in PRIORITY else len(PRIORITY), f))
    return [f[:-3].replace("/", ".") + ".*" for f in files]


def run_module(name: str, jobs: int, deadline_s: float | None = None, workdir: Path | None = None,
               only: list[str] | None = None) -> dict:
    """Mutation-test one module, file by file; with `deadline_s`, stop then and score the mutants done.
    With `only` (file stems), mutate those files and merge their scores into the module's JSON."""
    paths, tests = MODULES[name]
    files = _files(paths, only)
    tests = [t for t in tests if (ROOT / t.split("::")[0]).exists()]
    work = workdir or Path(tempfile.mkdtemp(prefix=f"mutation-{name}-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    with open(work / "pyproject.toml", "a") as fh:
        fh.write(_config(paths if only is None else files, tests))
    (work / ".mutation-commit").write_text(subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                                          check=True, capture_output=True, text=True).stdout)
    start = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    finished = True
    for pattern in _globs(files):
        left = None if deadline_s is None else deadline_s - (time.time() - start)
        if left is not None and left <= 0:
            finished = False
            break
        with open(work / "mutmut.log", "a") as log:
            proc = subprocess.Popen(["nice", "-n", "10", sys.executable, "-m", "mutmut", "run", "--max-children",
                                     str(jobs), pattern], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
                finished = False
                break
    if all(st == "not checked" for st in _statuses(work).values()):  # e.g. a test failed before any mutant ran
        raise SystemExit(f"error: mutmut tested no mutant of {name}; nothing scored (see {work / 'mutmut.log'})")
    return score(name, work, finished, round(time.time() - start), only)


# the diff of each mutant named on stdin (mutmut's own `show`, in one process)
DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant
out = {}
for name in json.load(sys.stdin):
    try:
        out[name] = get_diff_for_mutant(name, path=find_mutant(name).path).strip()
    except Exception as err:  # a mutant mutmut cannot show: keep the reason
        out[name] = f"(no diff: {err})"
print(json.dumps(out))
"""


def _file_of(mutant: str) -> str:
    """sa_profiler.engine.timing.x_describe__mutmut_3 -> sa_profiler.engine.timing"""
    return re.split(r"\.x[_\u01c1]", mutant)[0]


def score(name: str, work: Path, finished: bool = True, seconds: int = 0, only: list[str] | None = None) -> dict:
    """Score the mutants a mutmut folder has results for; write reports/mutation/<name>.json.
    With `only` (file stems), the folder holds those files' mutants: they replace those files'
    entries in the module's JSON, and the other files keep theirs (each file's commit is kept)."""
    paths, tests = MODULES[name]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    stamp = work / ".mutation-commit"
    commit = stamp.read_text().strip() if stamp.exists() else "?"
    all_statuses = _statuses(work)
    if only is not None:  # the files run, also where mutmut had none of their mutants to record
        all_statuses = {m: st for m, st in all_statuses.items() if _file_of(m).rsplit(".", 1)[-1] in only}
    statuses = {m: st for m, st in all_statuses.items() if st != "not checked"}
    untested_by_file: dict[str, int] = {}
    for mutant, status in all_statuses.items():
        if status == "not checked":
            untested_by_file[_file_of(mutant)] = untested_by_file.get(_file_of(mutant), 0) + 1
    alive = [m for m, st in statuses.items() if st not in KILLED]
    diffs = json.loads(subprocess.run([sys.executable, "-c", DIFFS], input=json.dumps(alive), cwd=work, env=env,
                                      capture_output=True, text=True, check=True).stdout or "{}")
    survivors = {m: {"status": statuses[m], "diff": diffs.get(m, "")} for m in alive}
    by_file: dict[str, dict[str, int]] = {}
    for mutant, status in statuses.items():
        counts = by_file.setdefault(_file_of(mutant), {"total": 0, "killed": 0})
        counts["total"] += 1
        counts["killed"] += status in KILLED
    commit_by_file = {f: commit for f in set(by_file) | set(untested_by_file)}
    if only is not None and (OUT / f"{name}.json").exists():
        old = json.loads((OUT / f"{name}.json").read_text())
        rerun = lambda f: f.rsplit(".", 1)[-1] in only
        by_file.update({f: c for f, c in old["by_file"].items() if not rerun(f)})
        survivors.update({m: s for m, s in old["survivors"].items() if not rerun(_file_of(m))})
        # a JSON from before per-file counts: its unreached mutants are counted as in the files run again
        untested_by_file.update({f: n for f, n in old.get("untested_by_file", {}).items() if not rerun(f)})
        commit_by_file.update({f: c for f, c in old.get("commit_by_file", {}).items() if not rerun(f)})
        commit_by_file.update({f: old["commit"] for f in old["by_file"] if not rerun(f) and f not in commit_by_file})
        seconds += old.get("seconds", 0)
    total = sum(c["total"] for c in by_file.values())
    killed = sum(c["killed"] for c in by_file.values())
    untested = sum(untested_by_file.values())
    commits = sorted(set(commit_by_file.values()))
    result = {"module": name, "paths": paths, "tests": tests, "commit": " + ".join(commits) or commit,
              "commit_by_file": commit_by_file, "tool": _mutmut_version(),
              "finished": finished and not untested, "untested": untested, "untested_by_file": untested_by_file,
              "total": total, "killed": killed, "score": killed / total if total else None,
              "seconds": seconds, "by_file": by_file, "survivors": survivors}
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = OUT / f".{name}.json.tmp"
    tmp.write_text(json.dumps(result, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    tmp.replace(OUT / f"{name}.json")
    write_summary()
    return result


def _mutmut_version() -> str:
    from importlib.metadata import version

    return f"mutmut {version('mutmut')}"


def write_summary() -> Path:
    """reports/mutation/README.md from the module JSON files, with the equivalent mutants
    (reports/mutation/equivalent.json: mutant -> why it cannot change an answer)."""
    equivalent_path = OUT / "equivalent.json"
    equivalent = json.loads(equivalent_path.read_text()) if equivalent_path.exists() else {}
    lines = ["# Mutation score", "",
             "Made by `python benchmarks/mutation.py` (mutmut; not run in CI). Killed: a test failed or timed out.",
             "Equivalent: a surviving mutant that cannot change any answer (reason beside it); the adjusted",
             "score leaves those out of the total.", "",
             "| module | commit | mutants tested | killed | score | equivalent | adjusted score | not reached | seconds |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    details = []
    for path in sorted(OUT.glob("*.json")):
        if path.name == "equivalent.json":
            continue
        r = json.loads(path.read_text())
        if not r["total"]:
            lines.append(f"| {r['module']} | {r['commit']} | 0 | - | - | - | - | {r['untested']} | {r['seconds']} |")
            continue
        eq = [m for m in r["survivors"] if m in equivalent]
        adjusted = r["killed"] / (r["total"] - len(eq)) if r["total"] - len(eq) else 0
        lines.append(f"| {r['module']} | {r['commit']} | {r['total']} | {r['killed']} | {r['score']:.1%} | {len(eq)} | "
                     f"{adjusted:.1%} | {r['untested'] if not r['finished'] else 0} | {r['seconds']} |")
        details.append(f"\n## {r['module']}: {', '.join(r['paths'])}\n\nTests: {', '.join(r['tests'])}\n")
        details.append("| file | mutants | killed |\n|---|---:|---:|")
        details += [f"| {f} | {c['total']} | {c['killed']} |" for f, c in sorted(r["by_file"].items())]
        if eq:
            details.append("\nEquivalent mutants:\n")
            details += [f"- `{m}`: {equivalent[m]}" for m in eq]
        rest = [m for m in r["survivors"] if m not in equivalent]
        if rest:
            details.append(f"\nOther survivors ({len(rest)}; diffs in {path.name}):\n")
            details += [f"- `{m}` ({r['survivors'][m]['status']})" for m in rest]
    notes = OUT / "notes.md"  # what a run left out, and why (kept by hand)
    if notes.exists():
        details.append("\n" + notes.read_text().strip())
    text = "\n".join(lines + details) + "\n"
    tmp = OUT / ".README.md.tmp"
    tmp.write_text(text)
    tmp.replace(OUT / "README.md")
    return OUT / "README.md"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"any of {', '.join(MODULES)} (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument("--deadline", type=float, metavar="SECONDS",
                        help="stop each module after this long and score the mutants done")
    parser.add_argument("--files", metavar="STEMS",
                        help="with one MODULE: mutate only these of its files (comma-separated, e.g. layouts,timing) "
                             "and merge their scores into reports/mutation/MODULE.json")
    parser.add_argument("--summary", action="store_true", help="only rebuild reports/mutation/README.md")
    parser.add_argument("--score", metavar="FOLDER", help="only score the mutmut folder of an earlier run of MODULE")
    args = parser.parse_args(argv)
    if args.summary:
        print("wrote", write_summary())
        return
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module {unknown[0]!r}; expected {', '.join(MODULES)}")
    only = [f.strip() for f in args.files.split(",") if f.strip()] if args.files else None
    if only is not None:
        if len(args.modules) != 1:
            parser.error("--files needs the one MODULE the files belong to")
        try:  # names checked before any work
            _files(MODULES[args.modules[0]][0], only)
        except ValueError as err:
            parser.error(str(err))
    if args.score:
        if len(args.modules) != 1:
            parser.error("--score FOLDER needs the one MODULE it ran")
        r = score(args.modules[0], Path(args.score), finished=False, only=only)
        print(f"{r['module']}: {r['killed']}/{r['total']} killed ({(r['score'] or 0):.1%}); {r['untested']} not reached")
        return
    for name in args.modules or list(MODULES):
        r = run_module(name, args.jobs, args.deadline, only=only)
        print(f"{name}: {r['killed']}/{r['total']} killed ({(r['score'] or 0):.1%}) in {r['seconds']} s"
              + ("" if r["finished"] else f"; stopped at the deadline with {r['untested']} mutants untested"))


if __name__ == "__main__":
    main()
