"""The commands README.md documents, as data: what tests/test_readme.py runs.

Three places hold commands:
- shell blocks (```bash, ```sh): every line is a command (`$ ` prompts and trailing
  `# comments` dropped, `\\` continuations joined, `a && b` split into two commands);
- transcripts (``` blocks with no language, ```console): a `$ COMMAND` line, then the output the README
  shows for it;
- inline code in the prose that starts with a program (`sa-profile ...`, `python ...`,
  `python3 ...`, `pip ...`), whitespace collapsed where the span wraps a line.
Python blocks (```python) are snippets, kept whole.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

SHELL_LANGS = {"bash", "sh", "shell", "zsh"}
TRANSCRIPT_LANGS = {"", "text", "console", "shell-session"}  # `$ COMMAND` lines, then its output
PROGRAMS = ("sa-profile", "python", "python3", "pip")
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")


@dataclass(frozen=True)
class Command:
    text: str                   # the command with quotes resolved, tokens joined by one space
    argv: tuple[str, ...]
    line: int                   # 1-based line in its page where it starts
    source: str                 # "shell", "transcript" or "inline"
    output: tuple[str, ...] = field(default=(), compare=False)  # a transcript's lines after the command
    doc: str = field(default="README.md", compare=False)  # the page it is on (README.md or docs/*.md)

    @property
    def program(self) -> str:
        return self.argv[0] if self.argv else ""


@dataclass(frozen=True)
class Snippet:
    code: str
    line: int                   # line of its first code line
    doc: str = field(default="README.md", compare=False)


def _command(text: str, line: int, source: str, output=()) -> list[Command]:
    out = []
    for part in re.split(r"\s&&\s", text):
        argv = tuple(shlex.split(part, comments=True))
        if argv:
            out.append(Command(" ".join(argv), argv, line, source, tuple(output)))
    return out


def _shell_block(lines: list[tuple[int, str]]) -> list[Command]:
    cmds, pending, start = [], "", 0
    for no, raw in lines:
        s = raw.strip()
        if not pending:
            if not s or s.startswith("#"):
                continue
            start = no
            s = s[2:] if s.startswith("$ ") else s
        if s.endswith("\\"):
            pending += s[:-1] + " "
            continue
        cmds += _command(pending + s, start, "shell")
        pending = ""
    if pending:
        cmds += _command(pending, start, "shell")
    return cmds


def _transcript_block(lines: list[tuple[int, str]]) -> list[Command]:
    cmds, current, output = [], None, []
    for no, raw in lines + [(0, "$ ")]:
        if raw.startswith("$ "):
            if current is not None:
                while output and not output[-1].strip():
                    output.pop()
                cmds += _command(current[1], current[0], "transcript", output)
            current, output = (no, raw[2:]), []
        elif current is not None:
            output.append(raw)
    return cmds


def _inline(prose: list[tuple[int, str]]) -> list[Command]:
    text = "\n".join(s for _, s in prose)
    starts = [no for no, _ in prose]
    offsets, pos = [], 0
    for _, s in prose:
        offsets.append(pos)
        pos += len(s) + 1
    cmds = []
    for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text):
        span = " ".join(m.group(1).split())
        if span.split(" ", 1)[0] in PROGRAMS and " " in span:
            row = max(i for i, off in enumerate(offsets) if off <= m.start())
            cmds += _command(span, starts[row], "inline")
    return cmds


def parse(readme: str) -> tuple[list[Command], list[Snippet]]:
    """Every command and Python snippet in a README, in the order they appear."""
    cmds: list[Command] = []
    snippets: list[Snippet] = []
    lines = readme.splitlines()
    prose: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1  # the closing fence
        if prose:
            cmds += _inline(prose)
            prose = []
        if lang in SHELL_LANGS:
            cmds += _shell_block(body)
        elif lang in ("python", "py"):
            if body:
                snippets.append(Snippet("\n".join(s for _, s in body), body[0][0]))
        elif lang in TRANSCRIPT_LANGS:
            cmds += _transcript_block(body)
    if prose:
        cmds += _inline(prose)
    return sorted(cmds, key=lambda c: c.line), snippets
