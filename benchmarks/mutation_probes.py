"""Planted bugs that once survived the suite: each must now fail at least one test.

    python benchmarks/mutation_probes.py            # every probe
    python benchmarks/mutation_probes.py tracker    # the probes whose name contains "tracker"

Each probe edits a fresh snapshot of the committed tree (`git archive HEAD`): a text
replacement (which must still match today's code, or the probe says it no longer applies) or
a monkeypatch appended to a module. The tests named with it then run in that snapshot, and
the probe is `caught` when one fails. Prints one line per probe; exits 1 if any is missed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Probe:
    name: str
    file: str
    old: str  # text to replace; empty: append `new` to the file
    new: str
    tests: tuple[str, ...]


PROBES = [
    Probe("tracker counts an already-seen storage again", "sa_profiler/engine/tracker.py",
          "if st in self._seen:\n            return", "if False:\n            return", ("tests/test_oracles.py",)),
    Probe("drop the cuDNN forward rule", "sa_profiler/engine/rules.py", "",
          '\ndel RULES["_scaled_dot_product_cudnn_attention"]\n',
          ("tests/test_rule_coverage.py", "tests/test_tolerance.py")),
    Probe("drop the _safe_softmax rule", "sa_profiler/engine/rules.py", "", '\ndel RULES["_safe_softmax"]\n',
          ("tests/test_rule_coverage.py", "tests/test_tolerance.py")),
    Probe("disable the AMP weight-cast cache", "sa_profiler/engine/amp.py", "",
          "\n_cast_cached = AutocastEmulation._cast\n\n\n"
          "def _cast_uncached(self, t, dtype):\n"
          "    caching, self._caching = self._caching, False\n"
          "    try:\n"
          "        return _cast_cached(self, t, dtype)\n"
          "    finally:\n"
          "        self._caching = caching\n\n\n"
          "AutocastEmulation._cast = _cast_uncached\n",
          ("tests/test_amp_cache.py",)),
    Probe("the allocator never releases cached free segments under the cap", "sa_profiler/engine/allocator.py", "",
          "\nCudaCachingAllocator._release_cached = lambda self: None\n", ("tests/test_golden.py",)),
    Probe("stop escaping the recorded command in the HTML", "sa_profiler/report/html.py",
          "<pre>{esc(meta.get('command', ''))}</pre>", "<pre>{meta.get('command', '')}</pre>",
          ("tests/test_html_escaping.py",)),
    Probe("stop escaping the atlas cells in the HTML", "sa_profiler/report/html.py",
          """f'<td>{esc(row[d]) if isinstance(row[d], str) else "-"}</td>'""",
          """f'<td>{row[d] if isinstance(row[d], str) else "-"}</td>'""", ("tests/test_html_escaping.py",)),
    Probe("stop escaping the <title> in the HTML", "sa_profiler/report/page.py",
          "<title>{esc(title)}</title>", "<title>{title}</title>", ("tests/test_html_escaping.py",)),
    Probe("a batch search that returns one batch too many", "sa_profiler/advice/recommend.py",
          "            hi = mid\n    return lo, seen", "            hi = mid\n    return lo + 1, seen",
          ("tests/test_golden.py",)),
    Probe("a model name printed as rich markup", "sa_profiler/report/console.py",
          "[bold]{escape(result.model)}[/]", "[bold]{result.model}[/]", ("tests/test_user_strings.py",)),
    Probe("implementation lists not de-duplicated", "sa_profiler/advice/recommend.py",
          "        if c not in unique:\n            unique.append(c)", "        unique.append(c)",
          ("tests/test_user_strings.py",)),
]


def snapshot() -> Path:
    work = Path(tempfile.mkdtemp(prefix="probe-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    return work


def run(probe: Probe) -> tuple[str, str]:
    """('caught' | 'MISSED' | 'no longer applies', detail)."""
    work = snapshot()
    try:
        return _run_in(work, probe)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_in(work: Path, probe: Probe) -> tuple[str, str]:
    path = work / probe.file
    text = path.read_text()
    if probe.old:
        if text.count(probe.old) != 1:
            return "no longer applies", f"{probe.file} no longer has the code this probe edits"
        text = text.replace(probe.old, probe.new)
    else:
        text += probe.new
    path.write_text(text)
    # `python -m pytest` in the snapshot puts it first on sys.path, ahead of an installed sa_profiler
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not cuda and not ray",
           *probe.tests]
    done = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    failed = [ln for ln in done.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    if done.returncode == 1 and failed:
        return "caught", failed[0].split(" - ")[0]
    if done.returncode == 0:
        return "MISSED", f"{' '.join(probe.tests)} all pass"
    return "MISSED", f"pytest exited {done.returncode}: {done.stdout.strip().splitlines()[-1:]}"


def main(argv=None) -> int:
    wanted = list(argv if argv is not None else sys.argv[1:])
    probes = [p for p in PROBES if not wanted or any(w in p.name for w in wanted)]
    missed = 0
    for probe in probes:
        start = time.time()
        status, detail = run(probe)
        missed += status != "caught"
        print(f"{status:<17} {probe.name}: {detail} ({time.time() - start:.0f} s)", flush=True)
    print(f"{len(probes) - missed} of {len(probes)} planted bugs caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
