"""The headline answer, kept: a question asked again prints the stored answer, without torch.

The key is everything the printed answer depends on: the question's value, whole (the card with
its rates, the torch whose rules apply, the headroom: `question.from_options`, as the command's
edge builds it); the arguments; a digest of this package's
files; the versions of Python, torch, click, rich and pandas; the environment variables that
torch, the CUDA libraries, the terminal or this package read; and the terminal itself (whether
stdout is one, and its size). Only simulated answers are kept: on a machine where torch could
see a CUDA device, `auto` measures the local card, and measured numbers vary from run to run, so
there the cache is not used. A command that fails (exit code other than 0) is not kept.

Stored under `$SA_PROFILER_CACHE` (a folder; `off` disables it), else
`$XDG_CACHE_HOME/sa-profiler/answers` or `~/.cache/sa-profiler/answers`, one file per answer,
written to a temporary name and renamed; the oldest go beyond `MAX_ENTRIES`.

An entry is a header line (`FORMAT`, the answer's length in bytes and its SHA-256) and the
answer in UTF-8. It is printed only when all three hold; an entry that fails them, or cannot be
read or decoded, is removed and the question answered afresh (and kept again). A cache that
cannot be read or written never changes the answer or the exit code. `SA_PROFILER_CACHE_LOG=1`
says on stderr, in one line, why an entry was not used or kept.

This module imports nothing heavy: a hit costs the interpreter, click's absence included.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from pathlib import Path

MAX_ENTRIES = 256
PACKAGE = Path(__file__).resolve().parents[1]  # sa_profiler/: its files key the cache
FORMAT = b"sa-profiler-answer/2"
LOG = "SA_PROFILER_CACHE_LOG"  # not part of the key: it changes no answer
ENV_PREFIXES = ("SA_PROFILER_", "TORCH_", "PYTORCH_", "CUDA_", "CUBLAS", "CUDNN_", "NVIDIA_", "HIP_", "ROCR_")
ENV_NAMES = ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TERM", "COLORTERM", "TTY_COMPATIBLE", "TTY_INTERACTIVE",
             "JUPYTER_COLUMNS", "JUPYTER_LINES", "CLICOLOR", "CLICOLOR_FORCE", "LANG", "LC_ALL", "PYTHONIOENCODING",
             "OMP_NUM_THREADS")
# root-command options that only ask a question (no file written, nothing measured)
CACHEABLE = {"--shape", "--gpu", "--gpu-mem", "--batch", "--mode", "--dtype", "--impl", "--headroom", "--engine",
             "--json", "--torch-version"}


def folder() -> Path | None:
    where = os.environ.get("SA_PROFILER_CACHE", "")
    if where.lower() in ("off", "0", "no", "false"):
        return None
    if where:
        return Path(where)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sa-profiler" / "answers"


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def cuda_possible() -> bool:
    """Whether torch could see a CUDA (or ROCm) device here, told without importing torch."""
    if "+cpu" in _version("torch"):
        return False
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if sys.platform.startswith("linux"):
        return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd"))
    return sys.platform != "darwin"


def cacheable(argv: list[str]) -> bool:
    if not argv or not argv[0].startswith("--"):
        return False  # a subcommand, or nothing asked
    names = [a.split("=", 1)[0] for a in argv if a.startswith("--")]
    if any(n not in CACHEABLE for n in names) or "measure" in argv:
        return False
    return not cuda_possible()


def _package_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(PACKAGE)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def _terminal() -> str:
    try:
        tty = sys.stdout.isatty()
    except (AttributeError, ValueError):
        return "no-stdout"
    if not tty:
        return "pipe"
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
        return f"tty {size.columns}x{size.lines}"
    except OSError:
        return "tty"


def options(argv: list[str]) -> dict[str, str]:
    """The root command's options as given (the last of each; a flag's value is "")."""
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if name.startswith("--"):
            if not eq and name != "--json" and i + 1 < len(argv):
                i, value = i + 1, argv[i + 1]
            out[name] = value
        i += 1
    return out


def question(argv: list[str]) -> str:
    """The question's value the arguments ask, whole (`question.from_options`, which the
    command's own edge also builds), as canonical text; what a bad option fails with, else."""
    from sa_profiler.question import from_options

    given = options(argv)
    try:
        return from_options(given.get("--gpu"), given.get("--gpu-mem"), given.get("--headroom", "10%"),
                            given.get("--torch-version")).canonical()
    except ValueError as err:  # the command fails the same way, and a failed answer is never kept
        return f"no question: {err}"


def key(argv: list[str]) -> str:
    parts = [question(argv), repr(argv), _package_digest(), sys.version, _terminal(), sys.platform]
    parts += [f"{d}={_version(d)}" for d in ("torch", "click", "rich", "pandas", "numpy")]
    parts += [f"{k}={v}" for k, v in sorted(os.environ.items())
              if k != LOG and (k in ENV_NAMES or k.startswith(ENV_PREFIXES))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class _Tee(io.TextIOBase):
    """stdout that also keeps what is written (the same tty, width and encoding for rich/click)."""

    def __init__(self, stream):
        self.stream = stream
        self.kept = io.StringIO()

    def write(self, s):
        self.kept.write(s)
        return self.stream.write(s)

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return self.stream.isatty()

    def fileno(self):
        return self.stream.fileno()

    @property
    def encoding(self):
        return self.stream.encoding

    @property
    def errors(self):
        return self.stream.errors


def _note(why: str) -> None:
    if os.environ.get(LOG, "").lower() not in ("", "0", "no", "false", "off"):
        print(f"sa-profile: answer cache: {why}", file=sys.stderr)


def encode(text: str) -> bytes:
    """An entry: the header line, then the answer."""
    body = text.encode("utf-8")
    return b"%s %d %s\n" % (FORMAT, len(body), hashlib.sha256(body).hexdigest().encode()) + body


def decode(entry: bytes) -> str:
    """The answer an entry holds; ValueError (naming what is wrong) for any entry not whole."""
    head, newline, body = entry.partition(b"\n")
    fields = head.split(b" ")
    if not newline or len(fields) != 3 or fields[0] != FORMAT:
        raise ValueError(f"not an entry of format {FORMAT.decode()}")
    if not fields[1].isdigit() or int(fields[1]) != len(body):
        raise ValueError(f"{len(body)} bytes where the header says {fields[1][:20].decode('ascii', 'replace')}")
    if hashlib.sha256(body).hexdigest().encode() != fields[2]:
        raise ValueError("the answer's digest does not match its header")
    return body.decode("utf-8")  # a digest that matches leaves only a header written wrong


def _read(path: Path) -> str | None:
    """The kept answer at `path`, or None (a damaged entry is removed)."""
    try:
        entry = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        why = f"cannot read {path.name}: {err.strerror or err}"
    else:
        try:
            return decode(entry)
        except ValueError as err:
            why = f"{path.name} is damaged ({err})"
    _note(f"{why}; answered afresh")
    try:
        path.unlink()
    except OSError:
        pass
    return None


def _store(where: Path, name: str, text: str) -> None:
    tmp = where / f".{name}.{os.getpid()}.tmp"
    try:
        where.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(encode(text))
        os.replace(tmp, where / name)
        entries = sorted(where.glob("*.txt"), key=lambda p: p.stat().st_mtime)
        for old in entries[:-MAX_ENTRIES]:
            old.unlink(missing_ok=True)
    except (OSError, ValueError) as err:  # read-only or full disk, a vanished entry, text not encodable
        _note(f"not kept in {where}: {getattr(err, 'strerror', None) or err}")
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def answered(argv: list[str], run) -> None:
    """Print the kept answer to `argv` and exit 0, or `run()` (which exits) and keep its output."""
    where = folder()
    name = f"{key(argv)}.txt" if where is not None and cacheable(argv) else None
    if name is None:
        run()
        return
    text = _read(where / name)
    if text is not None:
        sys.stdout.write(text)
        sys.stdout.flush()
        raise SystemExit(0)
    tee = _Tee(sys.stdout)
    sys.stdout = tee
    code = 0
    try:
        run()
    except SystemExit as done:
        code = done.code
        raise
    finally:
        sys.stdout = tee.stream
        if code in (0, None):
            _store(where, name, tee.kept.getvalue())
