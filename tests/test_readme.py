"""README as tests: every command README.md and docs/*.md document runs here, on the CPU.

tests/readme_commands.py finds the commands (shell blocks, `$ ` transcripts, inline code that
starts with a program) and the Python blocks. Each command must match exactly one entry of
RUN (how to run it here: substitutions that make it fast on the CPU with the same flags) or of
NOT_RUN (why it cannot run in a test). A command in neither fails with a message saying how
to add it. Entries are regular expressions matched at the start of the command's text.

Where the README states a figure next to a command (a transcript, a sentence, a table), the
command is run unshrunk and the figure checked against what it prints: see FIGURES.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from readme_commands import Command, parse

pytestmark = [pytest.mark.slow]  # every README and docs/ command, run as a user types it

REPO = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))]  # the README and its docs
README_TEXT = "\n\n".join((REPO / page).read_text() for page in PAGES)
COMMANDS, SNIPPETS = [], []
for _page in PAGES:
    _cmds, _snips = parse((REPO / _page).read_text())
    COMMANDS += [replace(c, doc=_page) for c in _cmds]
    SNIPPETS += [replace(s, doc=_page) for s in _snips]
ENV = {"COLUMNS": "100", "SA_PROFILER_CACHE": "off"}  # the README's transcripts are 100 columns wide


@dataclass(frozen=True)
class Run:
    """How to run a README command here. `subs`: (regex, replacement) pairs applied to the
    command's text in order ({tmp} is this session's scratch folder); `after`: RUN keys whose
    commands must have run first (their files are used); `prelude`: Python run before a script
    that has no flag to shrink it; `cuda`: needs a CUDA GPU (run only where torch sees one);
    `xfail`: the command is broken in the product (strict: fixing it fails this mark);
    `expect`: a regex its output must match, and `files`: paths ({tmp}) it must write, so that a
    shrunk run that did nothing does not pass."""

    subs: tuple[tuple[str, str], ...] = ()
    expect: str = ""
    files: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    prelude: str = ""
    cuda: bool = False
    timeout: float = 120
    xfail: str = ""


TMP_OUT = (r"--out ", "--out {tmp}/")
SMALL_SWEEP = ((r"--batch \S+", "--batch 1,4"), (r"--channels \S+", "--channels 16"), (r"--res \S+", "--res 16:32:x2"),
               TMP_OUT)

RUN: dict[str, Run] = {
    # the headline answer and its variants: simulations, cheap as they are
    r"sa-profile --gpu-mem 12G --shape 128x256x256$": Run(),
    r"sa-profile --gpu t4 --shape 128x256x256 --mode train --dtype fp16$": Run(),
    r"sa-profile --gpu-mem 12G --shape 128x256x256 --mode train --dtype fp16$": Run(),
    r"sa-profile --gpu rtx-3060 --shape 128x256x256 --mode train --dtype fp16$": Run(),
    r"sa-profile gpus$": Run(),
    r"sa-profile doctor$": Run(),
    r"sa-profile --shape \.\.\. --html FILE$": Run(subs=((r"--shape \.\.\.", "--gpu t4 --shape 64x32x32 --batch 2"),
                                                        (r"FILE$", "{tmp}/advice.html")), files=("{tmp}/advice.html",)),
    # sweeps: a smaller grid (batches, channels, resolutions), the same flags, written under {tmp}
    r"sa-profile sweep --batch \S+ --channels 128 --res \S+ --impl all --dtype fp32,fp16 --mode both --gpu t4 "
    r"--out forum-t4$": Run(subs=SMALL_SWEEP, files=("{tmp}/forum-t4/report.html",)),
    r"sa-profile sweep --batch \S+ --channels 128 --res \S+ --impl all --dtype fp32,fp16 --mode both --gpu-mem 12G "
    r"--out forum-12gib$": Run(subs=SMALL_SWEEP, files=("{tmp}/forum-12gib/report.html",)),
    # `...` stands for the flags of the forum-t4 sweep above: resume that (shrunk) sweep
    r"sa-profile sweep \.\.\. --out forum-t4 --resume$": Run(
        subs=((r"\.\.\.", "--batch 1,4 --channels 16 --res 16:32:x2 --impl all --dtype fp32,fp16 --mode both --gpu t4"),
              TMP_OUT),
        after=(r"sa-profile sweep --batch \S+ --channels 128 --res \S+ --impl all --dtype fp32,fp16 --mode both "
               r"--gpu t4 --out forum-t4$",)),
    r"sa-profile report forum-t4/results.csv$": Run(
        subs=((r"report forum", "report {tmp}/forum"),), expect=r"^wrote .*forum-t4/report\.html",
        after=(r"sa-profile sweep --batch \S+ --channels 128 --res \S+ --impl all --dtype fp32,fp16 --mode both "
               r"--gpu t4 --out forum-t4$",)),
    # whole models: smaller batches and inputs where they cost time, the same flags
    r"sa-profile fit examples/sagan.py:Generator --input 128 --batch 64 --gpu t4 --optimizer adam$": Run(),
    r"sa-profile fit examples/classifier.py:resnet_attn --input 3x224x224 --batch 32 --gpu-mem 12G --amp fp16 "
    r"--find-max-batch$": Run(subs=((r"--batch 32", "--batch 2"),)),  # the search's cost is its steps, not the batch
    r"sa-profile fit examples/classifier.py:forum_cnn --input 128x256x256 --gpu t4$": Run(),
    r"sa-profile plan examples/sagan.py:Generator --input 128 --batch 64 --gpu t4$": Run(
        timeout=300, expect=r'(?s)Plans that fit, fastest first.*The top plan, as code:.*convert\(model, "sdpa"\)'),
    r"sa-profile plan examples/classifier.py:forum_cnn --input 128x256x256 --batch 16 --gpu t4$": Run(
        timeout=300, expect=r'(?s)Plans that fit, fastest first.*The top plan, as code:'),
    # one rank of four: DDP does not fit a T4, FSDP2 does (a simulation of the full-size model)
    r"sa-profile fit transformers:gpt2 --arg n_layer=36 --arg n_embd=1280 --arg n_head=20 --input input_ids=512:int64 "
    r"--batch 2 --gpu t4 --world-size 4 --parallel ddp$": Run(timeout=300, expect=r"does not fit"),
    r"sa-profile fit transformers:gpt2 --arg n_layer=36 --arg n_embd=1280 --arg n_head=20 --input input_ids=512:int64 "
    r"--batch 2 --gpu t4 --world-size 4 --parallel fsdp$": Run(timeout=300, expect=r"usable: fits"),
    r"sa-profile fit examples/zoo/unet.py:unet --input 3x64x64 --input timestep=scalar:int64 --batch 8 --gpu t4 "
    r"--amp fp16$": Run(subs=((r"--input 3x64x64", "--input 3x32x32"), (r"--batch 8", "--batch 2"))),
    r"sa-profile fit examples/zoo/bert.py:bert_mini --input input_ids=128:int64 --input attention_mask=128:int64 "
    r"--batch 16 --gpu rtx-3060$": Run(),
    # library models by name (the test extras install the libraries)
    r"sa-profile fit timm:swin_tiny_patch4_window7_224 --batch 32 --gpu t4 --amp fp16$": Run(
        subs=((r"--batch 32", "--batch 2"),), expect=r"Attention written out by hand .* in 12 modules"),
    r"sa-profile fit transformers:bert --arg num_hidden_layers=4 --input input_ids=512:int64 --input "
    r"attention_mask=512:int64:pad=0\.25 --batch 16 --gpu t4$": Run(expect=r"efficient"),
    # the full Stable Diffusion UNet's channels, at a quarter of its latent size and one block per level
    r"sa-profile fit diffusers:UNet2DConditionModel --arg sample_size=32 --batch 2 --gpu a100-40gb --amp bf16$": Run(
        subs=((r"--arg sample_size=32", "--arg sample_size=16 --arg layers_per_block=1"),), expect=r"fits"),
    r"sa-profile fit torchvision:vit_b_16 --batch 64 --gpu-mem 24G --amp bf16$": Run(
        subs=((r"--batch 64", "--batch 2"),), expect=r"Attention layers \(12"),
    # a real step on this CPU: the file's small ViT (patch 8, 2 blocks) on its 32 x 32 input, the same flags
    r"sa-profile fit examples/zoo/vit.py:vit_small --input 3x224x224 --batch 8 --gpu cpu --engine measure$": Run(
        subs=((r"vit_small", "vit_tiny_test"), (r"--input 3x224x224", "--input 3x32x32"), (r"--batch 8", "--batch 2"))),
    r"sa-profile fit examples/zoo/vit.py:vit_small --input 3x224x224 --batch 16 --accumulation 4 --checkpointing all "
    r"--gpu t4$": Run(subs=((r"vit_small", "vit_tiny_test"), (r"--input 3x224x224", "--input 3x32x32")),
                      expect=r"checkpointing all"),
    r"sa-profile fit \.\.\. --html FILE$": Run(subs=((r"fit \.\.\.", "fit examples/sagan.py:Generator --input 128 --batch 2"),
                                                    (r"FILE$", "{tmp}/fit.html")), files=("{tmp}/fit.html",)),
    # validation and time-model figures: re-simulations of committed data, run as they are
    r"python -m sa_profiler\.validation$": Run(),
    r"python -m sa_profiler\.validation --floors$": Run(),
    r"python -m sa_profiler\.validation\.timing_fit --check$": Run(),
    # benchmarks: their smallest form
    r"python benchmarks/simulate_speed\.py$": Run(prelude=(  # no size flag: 0.02 s per rate instead of 0.5 s
        "import importlib; s = importlib.import_module('sa_profiler.engine.simulate'); f = s.simulations_per_second\n"
        "s.simulations_per_second = lambda w, seconds=0.5: f(w, seconds=0.02)"), expect=r"^chunked.*train .* \d+\.\d$"),
    r"python benchmarks/cli_latency\.py$": Run(subs=((r"$", " --runs 1 --only default"),), expect=r"^default +repeated"),
    r"python benchmarks/sweep_speed\.py$": Run(expect=r"ratio \d"),
    r"python benchmarks/plan_speed\.py$": Run(subs=((r"$", " --only cnn_mha --only bert_mini"),),
                                              expect=r"worst ratio to the goal: \d"),
    r"python benchmarks/torch_matrix\.py$": Run(timeout=300, expect=r"^\| 2\.\d+"),
    # `--grid tiny` dry-runs on the CPU (as the README says), in a 1-second time box
    r"python benchmarks/validate_cuda\.py$": Run(subs=((r"$", " --grid tiny --budget 1 --out {tmp}/validation"),),
                                                  expect=r"^wrote .*tiny\.csv"),
    r"python benchmarks/validate_cuda\.py --out reports/validation$": Run(
        subs=((r"--out reports/validation$", "--grid tiny --budget 1 --out {tmp}/validation"),),
        expect=r"^wrote .*tiny\.csv"),
    # one planted bug (its name filter), applied to a snapshot of HEAD and run against its test file
    r"python benchmarks/mutation_probes\.py$": Run(subs=((r"$", " <title>"),), timeout=180,
                                                    expect=r"^1 of 1 planted bugs caught"),
    # on a CUDA card only
    r"python benchmarks/attention_speed\.py$": Run(cuda=True, subs=((r"$", " --repeats 2 --out {tmp}/validation"),)),
    r"python benchmarks/check_max_batch\.py --bisect$": Run(cuda=True, timeout=600,
                                                             subs=((r"$", " --only 12G --out {tmp}/validation"),)),
    r"python benchmarks/parallel_on_card\.py --out reports/validation$": Run(cuda=True, timeout=600),
    r"python benchmarks/parallel_on_card\.py --device cpu --small --out dry-run$": Run(
        subs=((r"--out dry-run", "--out {tmp}/parallel --world 2"),), expect=r"worst error: 0\.00% over 9 cases"),
    r"python benchmarks/validate_fit_cuda\.py --zoo --probe$": Run(cuda=True, timeout=600,
                                                                     subs=((r"$", " --out {tmp}/validation"),)),
    r"python benchmarks/probe_reductions\.py$": Run(cuda=True, timeout=300, subs=((r"$", " --out {tmp}/validation"),)),
}

NOT_RUN: dict[str, str] = {
    r"pip install": "installs packages into the environment the tests run in",
    r"ray start": "starts a Ray cluster daemon; tests/test_ray.py starts its own",
    r"sa-profile sweep .*--executor ray": "needs a Ray cluster with GPU workers (--gpu all-workers)",
    r"python3? -m pytest": "the test command itself",
    r"sa-profile fit$": "the name of the subcommand in a heading, not a command",
    r"sa-profile fit mypkg\.models:build": "placeholder model `mypkg.models:build`",
    r"sa-profile fit FILE\.py:NAME": "placeholders (FILE.py:NAME, SHAPE, B) in the overview",
    r"sa-profile sweep$": "the name of the subcommand in the overview, not a command",
    r"python -m sa_profiler\.validation\.timing_fit$": "refits and rewrites sa_profiler/engine/timing_constants.py; its `--check` "
                                           "form is run",
    r"python -c import torch$": "the baseline that benchmarks/cli_latency.py times, run by that benchmark",
    r"python benchmarks/fit_speed\.py$": "real ResNet-50 and ViT-S/16 training steps on the CPU: 55 s on 2 cores even "
                                         "at --batch 1 --repeats 1; tests/test_fit.py holds simulated = real on the zoo",
    r"python benchmarks/fit_speed\.py --models library": "real training steps of six library models on the CPU (about "
                                                       "three minutes on 2 cores); tests/test_library_models.py holds "
                                                       "simulated = real on small ones",
    r"sa-profile fit NAME ": "a placeholder (NAME: each library model benchmarks/fit_cli_latency.py times)",
    r"python benchmarks/fit_cli_latency\.py": "36 fresh processes, each importing torch and a model library (about four "
                                              "minutes on 2 cores)",
    r"python FILE\.py$": "prose: how a model file is imported (`FILE.py` is a placeholder)",
    r"python benchmarks/torch_matrix\.py --torch": "installs each torch in an environment of its own (a few GB each); "
                                                "`.ci/run` runs it as CI's compatibility step",
    r"python tests/golden/regen\.py$": "rewrites tests/golden/answers.json; tests/test_golden.py checks those answers",
    r"python benchmarks/mutation\.py": "mutmut over a module's tests (the `mutation` extra, not installed here); hours "
                                      "on two cores",
    r"python benchmarks/report_speed\.py$": "a 2,000-row sweep with no flag to shrink it (about 3 minutes on 2 cores)",
    r"python benchmarks/ray_overhead\.py$": "starts a Ray cluster and sweeps a 144-row grid four times, with no flag to "
                                            "shrink it; tests/test_ray.py checks Ray rows against local ones",
    r"python benchmarks/report_screenshots\.py$": "rewrites the reports checked in under reports/ and needs headless "
                                                  "Chromium; tests/test_report_browser.py drives the pages",
}


@dataclass(frozen=True)
class Setup:
    """What a README Python block takes as given (`prelude`, run first in its namespace), and
    substitutions (regex, replacement) that shrink it. Functions named test_* that it defines
    are called too (the README shows them as tests for the reader's CI)."""

    prelude: str = ""
    subs: tuple[tuple[str, str], ...] = ()
    check: str = ""  # run after the block, in its namespace: what the README says the block does


SNIPPET_SETUP: dict[str, Setup] = {  # keyed by a regex searched in the block; a block with no entry runs as is
    r"result = fit\(Generator, 128": Setup(
        prelude=("import runpy\nGenerator = runpy.run_path('examples/sagan.py')['Generator']\n"
                 "UNet2DModel = runpy.run_path('examples/zoo/unet.py')['UNet2DModel']  # the zoo's diffusers copy"),
        # unshrunk: a simulation costs the same at any batch, and `assert_fits(..., batch=32)` is a claim
        check="assert any(k.startswith('test_') for k in list(globals()))  # the CI test was defined, and ran"),
    r"n = convert\(model, \"sdpa\"\)": Setup(
        # a model with one classic SAGAN layer, and a 128-channel map for the 128-channel layer
        prelude=("import runpy, torch\n"
                 "SelfAttn = runpy.run_path('examples/sagan.py')['SelfAttn']\n"
                 "model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 1), SelfAttn(32))\n"
                 "x = torch.randn(1, 128, 24, 24)"),
        # convert returns how many layers it swapped; rows are the maps of the chosen pixels, B x pixels x N
        check=("assert n == 1, n\n"
               "assert tuple(rows.shape) == (1, 2, 24 * 24), rows.shape\n"
               "assert torch.allclose(rows.sum(-1), torch.ones(1, 2), atol=1e-5)")),
}


# ---- matching ------------------------------------------------------------------------------

def entries_for(cmd: Command) -> list[tuple[str, str]]:
    found = [("RUN", k) for k in RUN if re.match(k, cmd.text)]
    return found + [("NOT_RUN", k) for k in NOT_RUN if re.match(k, cmd.text)]


def unique(commands: list[Command]) -> list[Command]:
    seen, out = set(), []
    for c in commands:
        if c.text not in seen:
            seen.add(c.text)
            out.append(c)
    return out


def command_of(key: str) -> Command:
    return next(c for c in COMMANDS if re.match(key, c.text))


# ---- running -------------------------------------------------------------------------------

@dataclass
class Outcome:
    argv: list[str]
    exit_code: int
    output: str


_DONE: dict[str, Outcome] = {}


@pytest.fixture(scope="session")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("readme")


def shrunk(cmd: Command, run: Run, tmp: Path) -> list[str]:
    text = cmd.text
    for pattern, repl in run.subs:
        new = re.sub(pattern, lambda m: repl.format(tmp=tmp), text, count=1)
        assert new != text, f"substitution {pattern!r} no longer applies to `{cmd.text}`"
        text = new
    return shlex.split(text)


def execute(key: str, tmp: Path) -> Outcome:
    """Run the README command RUN[key] matches (once per session; prerequisites first)."""
    if key in _DONE:
        return _DONE[key]
    run = RUN[key]
    for before in run.after:
        pre = execute(before, tmp)
        assert pre.exit_code == 0, f"prerequisite `{' '.join(pre.argv)}` failed:\n{pre.output[-3000:]}"
    cmd = command_of(key)
    argv = list(cmd.argv) if not run.subs else shrunk(cmd, run, tmp)
    same = next((o for o in _DONE.values() if o.argv == argv and not run.prelude), None)  # two README forms, one run
    if same is not None:
        outcome = same
    elif argv[0] == "sa-profile":
        outcome = _cli(argv)
    else:
        outcome = _python(argv, run)
    _DONE[key] = outcome
    return outcome


def _cli(argv: list[str]) -> Outcome:
    from sa_profiler.cli import cli

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        result = CliRunner().invoke(cli, argv[1:], env=ENV)
    finally:
        os.chdir(cwd)
    output = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        output += "".join(traceback.format_exception(*result.exc_info))
        return Outcome(argv, result.exit_code or 1, output)
    return Outcome(argv, result.exit_code, output)


def _python(argv: list[str], run: Run) -> Outcome:
    assert argv[0] in ("python", "python3"), argv
    args = argv[1:]
    if run.prelude:
        if args[0] == "-m":
            go = f"import runpy, sys; sys.argv = [{args[1]!r}] + sys.argv[1:]; " \
                 f"runpy.run_module({args[1]!r}, run_name='__main__', alter_sys=True)"
            rest = args[2:]
        else:
            go = f"import runpy, sys; sys.argv[0] = {args[0]!r}; runpy.run_path({args[0]!r}, run_name='__main__')"
            rest = args[1:]
        args = ["-c", f"{run.prelude}\n{go}", *rest]
    try:
        proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=run.timeout,
                              env={**os.environ, **ENV})
    except subprocess.TimeoutExpired as err:
        return Outcome(argv, -1, f"timed out after {run.timeout} s\n{err.stdout or ''}{err.stderr or ''}")
    return Outcome(argv, proc.returncode, proc.stdout + proc.stderr)


# ---- figures the README states next to a command -------------------------------------------

def tokens(text: str) -> list[str]:
    return text.split()


def contains_in_order(haystack: list[str], needles: list[list[str]]) -> str | None:
    """None if each token run of `needles` occurs in `haystack`, in order; else the first missing one."""
    pos = 0
    for needle in needles:
        if not needle:
            continue
        for i in range(pos, len(haystack) - len(needle) + 1):
            if haystack[i:i + len(needle)] == needle:
                pos = i + len(needle)
                break
        else:
            return " ".join(needle)
    return None


def check_transcript(cmd: Command, output: str) -> None:
    """Every line of the README's transcript is in the output, in order (whitespace aside: the
    README's lines wrap where the 100-column terminal did)."""
    missing = contains_in_order(tokens(output), [tokens(line) for line in cmd.output])
    assert missing is None, (f"{cmd.doc} line {cmd.line} shows `{missing}` in the output of `{cmd.text}`, "
                             f"which now prints:\n{output}")


def _rounded_in(figure: str, output: str) -> bool:
    """`80.1 GiB` in the README matches a printed `80.11 GiB` (the README rounds, same unit)."""
    value, unit = figure.split()
    places = len(value.partition(".")[2])
    for m in re.finditer(r"(\d+(?:\.\d+)?) " + re.escape(unit) + r"\b", output):
        if f"{float(m.group(1)):.{places}f}" == value:
            return True
    return False


def readme_says(pattern: str) -> re.Match:
    m = re.search(pattern, " ".join(README_TEXT.split()))
    assert m, f"README.md no longer says /{pattern}/: update FIGURES in tests/test_readme.py"
    return m


def check_forum_cnn(output: str) -> None:
    """The forum model's training step on a T4: the two figures the README gives before
    "once converted to `sdpa`" (the classic peak, then the converted one)."""
    text = " ".join(README_TEXT.split())
    at = text.find("once converted to `sdpa`")
    assert at >= 0, "README.md no longer says what the forum model needs 'once converted to `sdpa`': update FIGURES"
    figures = re.findall(r"\d+(?:\.\d+)? [KMG]iB", text[max(0, at - 200):at])
    assert len(figures) >= 2, f"cannot read the forum model's figures from README.md: {text[at - 200:at]!r}"
    peak, converted = figures[-2:]
    top = re.search(r"peak (\d+(?:\.\d+)? [KMG]iB)", output)
    assert top and _rounded_in(peak, top.group(0)), f"README.md says the forum model needs {peak}; it prints:\n{output}"
    row = next((line for line in output.splitlines() if line.strip().startswith("sdpa ")), "")
    assert _rounded_in(converted, row), f"README.md says {converted} once converted to sdpa; the sdpa row is: {row!r}"


def check_rtx_3060(output: str) -> None:
    memory, batch = readme_says(r"The `rtx-3060` entry \((\d+\.\d+ GiB)\) gives (\d+)").groups()
    assert f"{memory} (card" in " ".join(output.split()), f"README says the rtx-3060 has {memory}:\n{output}"
    assert re.search(rf"Recommended for train: .* batch {batch}:", output), \
        f"README says the rtx-3060 gives batch {batch}:\n{output}"


def check_floors(output: str) -> None:
    sentence = readme_says(r"prints it again\): (.*?), with no relative part").group(1)
    stated = {}
    for m in re.finditer(r"(?:(\d+) bytes|\((\d+) B\)) for (.*?)(?=, \d|$)", sentence):
        for backend in re.findall(r"`(\w+)`", m.group(3)):
            stated[backend] = int(m.group(1) or m.group(2))
    assert len(stated) >= 4, f"cannot read the floors from README.md: {sentence!r}"
    for backend, floor in stated.items():
        assert re.search(rf"^{backend}: {floor} bytes", output, re.M), \
            f"README.md says the {backend} floor is {floor} bytes; `--floors` prints:\n{output}"


def check_validation_tables(output: str) -> None:
    """Every row of the README's validation tables is a row `python -m sa_profiler.validation.accuracy` prints."""
    section = README_TEXT.split("## How accurate is it", 1)[1].split("\n#", 1)[0]
    rows = [line.strip() for line in section.splitlines() if re.match(r"\|\s*H100", line.strip())]
    assert rows, "no validation table rows found in README.md's 'How accurate is it'"
    printed = {" ".join(line.split()) for line in output.splitlines()}
    stale = [row for row in rows if " ".join(row.split()) not in printed]
    assert not stale, "README.md rows that `python -m sa_profiler.validation.accuracy` no longer prints:\n" + \
        "\n".join(stale) + "\n\nit prints:\n" + output


def check_gpu_count(output: str) -> None:
    stated = int(readme_says(r"`sa-profile gpus`: the GPU catalogue, (\d+) cards").group(1))
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("───")) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    assert end - start == stated, f"README.md says the catalogue has {stated} cards; `sa-profile gpus` lists " \
                                  f"{end - start}:\n{output}"


@dataclass(frozen=True)
class Figure:
    """A figure check on a command's unshrunk output; `xfail`: the README's figure is known
    stale (strict: once the README is corrected, remove the mark)."""

    check: object
    xfail: str = ""


FIGURES: dict[str, Figure] = {
    r"sa-profile fit examples/classifier.py:forum_cnn --input 128x256x256 --gpu t4$": Figure(check_forum_cnn),
    r"sa-profile --gpu rtx-3060 --shape 128x256x256 --mode train --dtype fp16$": Figure(check_rtx_3060),
    r"python -m sa_profiler\.validation --floors$": Figure(check_floors),
    r"sa-profile gpus$": Figure(check_gpu_count),
    r"python -m sa_profiler\.validation$": Figure(check_validation_tables),
}


# ---- the tests -----------------------------------------------------------------------------

def _params():
    for cmd in unique(COMMANDS):
        marks = []
        found = entries_for(cmd)
        if len(found) == 1 and found[0][0] == "RUN":
            run = RUN[found[0][1]]
            if run.cuda:
                marks += [pytest.mark.cuda,
                          pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
            if run.xfail:
                marks.append(pytest.mark.xfail(strict=True, reason=run.xfail))
        yield pytest.param(cmd, id=cmd.text, marks=marks)


@pytest.mark.parametrize("cmd", list(_params()))
def test_readme_command(cmd: Command, scratch):
    found = entries_for(cmd)
    assert found, (f"{cmd.doc} line {cmd.line}: `{cmd.text}` is in neither RUN nor NOT_RUN of tests/test_readme.py. "
                   f"Add it to RUN (a regex matching its start, with the substitutions that make it fast on the CPU: "
                   f"smaller --batch/--input/grid, --out under {{tmp}}; same flags) or to NOT_RUN with the reason.")
    assert len(found) == 1, f"`{cmd.text}` matches several entries of tests/test_readme.py: {found}"
    table, key = found[0]
    if table == "NOT_RUN":
        pytest.skip(f"not run: {NOT_RUN[key]}")
    run = RUN[key]
    outcome = execute(key, scratch)
    assert outcome.exit_code == 0, (f"{cmd.doc} line {cmd.line}: `{' '.join(outcome.argv)}` exited "
                                    f"{outcome.exit_code}:\n{outcome.output[-6000:]}")
    if run.expect:
        assert re.search(run.expect, outcome.output, re.M), \
            f"`{' '.join(outcome.argv)}` did not print /{run.expect}/:\n{outcome.output[-6000:]}"
    for path in run.files:
        assert Path(path.format(tmp=scratch)).is_file(), f"`{' '.join(outcome.argv)}` did not write {path}"
    if cmd.output:
        assert not run.subs and not run.prelude, f"`{cmd.text}` shows its output in README.md: run it unshrunk"
        check_transcript(cmd, outcome.output)


def _figure_params():
    for key, figure in FIGURES.items():
        marks = [pytest.mark.xfail(strict=True, reason=figure.xfail)] if figure.xfail else []
        yield pytest.param(key, id=command_of(key).text if any(re.match(key, c.text) for c in COMMANDS) else key,
                           marks=marks)


@pytest.mark.parametrize("key", list(_figure_params()))
def test_readme_figures(key, scratch):
    """The figures README.md states next to a command are what the unshrunk command prints."""
    found = [k for k in RUN if re.match(k, command_of(key).text)]
    assert len(found) == 1, f"FIGURES entry {key!r} needs its command in RUN"
    run = RUN[found[0]]
    assert not run.subs and not run.prelude, f"`{command_of(key).text}` states figures in README.md: run it unshrunk"
    outcome = execute(found[0], scratch)
    assert outcome.exit_code == 0, f"`{' '.join(outcome.argv)}` exited {outcome.exit_code}:\n{outcome.output[-6000:]}"
    FIGURES[key].check(outcome.output)


def test_tables_name_only_readme_commands():
    """An entry that matches no README command is stale: remove it."""
    texts = [c.text for c in COMMANDS]
    stale = [k for k in [*RUN, *NOT_RUN, *FIGURES] if not any(re.match(k, t) for t in texts)]
    stale += [k for k in SNIPPET_SETUP if not any(re.search(k, s.code) for s in SNIPPETS)]
    assert not stale, f"entries of tests/test_readme.py that match no command in README.md: {stale}"


def test_readme_has_commands():
    programs = {c.program for c in COMMANDS}
    assert {"sa-profile", "python", "pip"} <= programs, programs


def _snippet_params():
    for snip in SNIPPETS:
        first = next((line for line in snip.code.splitlines() if line.strip()), "")
        yield pytest.param(snip, id=f"python block: {first.strip()}")


@pytest.mark.parametrize("snip", list(_snippet_params()))
def test_readme_python_block(snip):
    found = [k for k in SNIPPET_SETUP if re.search(k, snip.code)]
    assert len(found) <= 1, f"the Python block at {snip.doc} line {snip.line} matches several SNIPPET_SETUP entries"
    setup = SNIPPET_SETUP[found[0]] if found else Setup()
    code = snip.code
    for pattern, repl in setup.subs:
        new = re.sub(pattern, repl, code)
        assert new != code, f"substitution {pattern!r} no longer applies to the block at {snip.doc} line {snip.line}"
        code = new
    namespace: dict = {"__name__": "readme"}
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        exec(compile(setup.prelude, "SNIPPET_SETUP", "exec"), namespace)
        try:
            exec(compile("\n" * (snip.line - 1) + code, str(REPO / snip.doc), "exec"), namespace)
        except NameError as err:
            pytest.fail(f"the Python block at {snip.doc} line {snip.line} is not self-contained ({err}): give it a "
                        f"prelude in SNIPPET_SETUP of tests/test_readme.py")
        for name, fn in list(namespace.items()):
            if name.startswith("test_") and callable(fn):
                fn()
        exec(compile(setup.check, "SNIPPET_SETUP check", "exec"), namespace)
    finally:
        os.chdir(cwd)


def test_parse_reads_every_form_of_command():
    text = """Intro `pip install -e .` and `sa-profile gpus`, and a span that
wraps: `sa-profile --gpu t4
  --shape 64x32x32`; not a command: `--batch B`.

```bash
pip install -e ".[test]" && python3 -m pytest -q
sa-profile sweep --batch 1,2 \\
                 --out reports/x     # a comment
```

```
$ sa-profile --gpu t4 --shape 8x4x4
line one
  line two

```

```python
print("hi")
```
"""
    cmds, snippets = parse(text)
    assert [(c.line, c.source, c.text) for c in cmds] == [
        (1, "inline", "pip install -e ."), (1, "inline", "sa-profile gpus"),
        (2, "inline", "sa-profile --gpu t4 --shape 64x32x32"),
        (6, "shell", "pip install -e .[test]"), (6, "shell", "python3 -m pytest -q"),
        (7, "shell", "sa-profile sweep --batch 1,2 --out reports/x"),
        (12, "transcript", "sa-profile --gpu t4 --shape 8x4x4")]
    assert cmds[-1].output == ("line one", "  line two")
    assert [(s.line, s.code) for s in snippets] == [(19, 'print("hi")')]


def test_transcript_check_needs_every_line_in_order():
    out = tokens("a b c\nd e\n f g")
    assert contains_in_order(out, [tokens("b c d"), tokens("f")]) is None
    assert contains_in_order(out, [tokens("d e"), tokens("a")]) == "a"
    assert contains_in_order(out, [tokens("c x")]) == "c x"


def test_rounded_figures_match_at_the_readmes_precision():
    assert _rounded_in("80.1 GiB", "peak 80.11 GiB of 12.77 GiB")
    assert _rounded_in("285 MiB", "sdpa  284.81 MiB  yes")
    assert not _rounded_in("80.2 GiB", "peak 80.11 GiB")
    assert not _rounded_in("285 MiB", "284.81 GiB")
