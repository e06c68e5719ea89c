"""The torch releases sa-profiler supports, and the checks on a version string (torch-free:
options are checked before torch loads)."""

from __future__ import annotations

SUPPORTED = ("2.4", "2.14")  # the first and last minor releases tested (reports/compat/)
OVERRIDE = "SA_PROFILER_ANY_TORCH"  # set to 1 to run outside the range anyway, at one's own risk


def version_tuple(version: str) -> tuple[int, int]:
    """'2.14.1+cu130' -> (2, 14)."""
    parts = version.split("+")[0].split(".")
    return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)


def installed_version() -> str | None:
    """The installed torch's version from its metadata (no import: a kept answer needs no torch)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def unsupported(version: str | None) -> str | None:
    """Why this torch cannot be used (one line), or None when it is in the supported range."""
    import os

    lo, hi = SUPPORTED
    if version is None:
        return f"torch is not installed; sa-profiler needs torch {lo} to {hi} (pip install torch)"
    if os.environ.get(OVERRIDE) == "1":
        return None
    try:
        v = version_tuple(version)
    except ValueError:
        return None  # a source build with an odd version string: let it try
    if v < version_tuple(lo):
        return (f"torch {version} is older than the supported range {lo} to {hi}; "
                f"install a newer one, e.g. pip install 'torch>={lo}', or set {OVERRIDE}=1 to try anyway")
    return None


def untested(version: str | None) -> str | None:
    """A one-line note where this torch is newer than the releases tested, or None. Such a torch
    is not refused: the guards below detect behaviour, not version numbers."""
    try:
        newer = version is not None and version_tuple(version) > version_tuple(SUPPORTED[1])
    except ValueError:
        return None
    if not newer:
        return None
    return (f"torch {version} is newer than the releases tested ({SUPPORTED[0]} to {SUPPORTED[1]}): "
            "the answers follow its behaviour as detected, untested")


def checked_torch_version(value: str | None, engine: str = "simulate") -> str | None:
    """A `--torch-version` (X.Y or X.Y.Z) within the supported range, stripped; None stays None.
    Raises ValueError (one line, with the accepted form) otherwise, and for `engine` "measure",
    which runs the installed torch."""
    import re

    if value is None:
        return None
    m = re.fullmatch(r"(\d+)\.(\d+)(\.\d+)?", str(value).strip())
    lo, hi = (version_tuple(v) for v in SUPPORTED)
    if not m or not lo <= (int(m[1]), int(m[2])) <= hi:
        raise ValueError(f"--torch-version {value!r}: expected X.Y or X.Y.Z from {lo[0]}.{lo[1]} to "
                         f"{hi[0]}.{hi[1]}, e.g. 2.6")
    if engine == "measure":
        raise ValueError("--torch-version asks about another torch, but measuring runs the installed one; "
                         "add --engine simulate")
    return str(value).strip()
