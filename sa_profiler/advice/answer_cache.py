"""The headline answer, kept: a question asked again prints the stored answer, without torch.

The key is everything the printed answer depends on: the arguments; a digest of this package's
files; the versions of Python, torch, click, rich and pandas; the environment variables that
torch, the CUDA libraries, the terminal or this package read; and the terminal itself (whether
stdout is one, and its size). Only simulated answers are kept: on a machine where torch could
see a CUDA device, `auto` measures the local card, and measured numbers vary from run to run, so
there the cache is not used. A command that fails (exit code other than 0) is not kept.

Stored under `$SA_PROFILER_CACHE` (a folder; `off` disables it), else
`$XDG_CACHE_HOME/sa-profiler/answers` or `~/.cache/sa-profiler/answers`, one file per answer,
written to a temporary name and renamed; the oldest go beyond `MAX_ENTRIES`.

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


def key(argv: list[str]) -> str:
    parts = [repr(argv), _package_digest(), sys.version, _terminal(), sys.platform]
    parts += [f"{d}={_version(d)}" for d in ("torch", "click", "rich", "pandas", "numpy")]
    parts += [f"{k}={v}" for k, v in sorted(os.environ.items()) if k in ENV_NAMES or k.startswith(ENV_PREFIXES)]
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


def _store(where: Path, name: str, text: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    tmp = where / f".{name}.{os.getpid()}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, where / name)
    entries = sorted(where.glob("*.txt"), key=lambda p: p.stat().st_mtime)
    for old in entries[:-MAX_ENTRIES]:
        old.unlink(missing_ok=True)


def answered(argv: list[str], run) -> None:
    """Print the kept answer to `argv` and exit 0, or `run()` (which exits) and keep its output."""
    where = folder()
    name = f"{key(argv)}.txt" if where is not None and cacheable(argv) else None
    if name is not None:
        try:
            text = (where / name).read_text(encoding="utf-8")
        except OSError:
            text = None
        if text is not None:
            sys.stdout.write(text)
            sys.stdout.flush()
            raise SystemExit(0)
    if name is None:
        run()
        return
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
            try:
                _store(where, name, tee.kept.getvalue())
            except OSError:
                pass  # a read-only home: answer, keep nothing
