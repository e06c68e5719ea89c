"""Parsing of sizes and shapes from the command line, and humanised bytes for display.

Memory sizes are binary: `12G` = `12GB` = `12GiB` = 12 * 2**30 bytes, as GPU memory is
quoted (a "12 GB" card holds 12 GiB). Bytes are `int` everywhere inside.
"""

from __future__ import annotations

import re

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)
SIZE_FORM = "a size such as 12G, 12GB, 12GiB, 15360MiB or 12884901888 (binary units)"
SHAPE_FORM = "CxHxW or BxCxHxW with positive integers, e.g. 128x256x256 (also 128,256,256)"


class ParseError(ValueError):
    """A user-given value that does not parse; the message names the accepted form."""


def parse_bytes(text: str) -> int:
    m = _SIZE.match(str(text))
    if not m:
        raise ParseError(f"cannot read memory size {text!r}: expected {SIZE_FORM}")
    value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if value < 1:
        raise ParseError(f"memory size {text!r} must be positive: expected {SIZE_FORM}")
    return int(value)


def parse_memory(text: str) -> int:
    """A card's memory: a size with its unit (a bare number is refused: `--gpu-mem 12` means
    12 GiB to a person and 12 bytes to a parser)."""
    m = _SIZE.match(str(text))
    if m and not m.group(2) and not m.group(3):
        raise ParseError(f"memory size {text!r} has no unit: expected {SIZE_FORM.replace(' or 12884901888', '')}")
    return parse_bytes(text)


def parse_shape(text: str) -> tuple[int | None, int, int, int]:
    """'128x256x256' -> (None, 128, 256, 256); '4x128x64x64' -> (4, 128, 64, 64)."""
    parts = [p.strip() for p in re.split(r"[x,X*]", str(text).strip())]
    if len(parts) not in (3, 4) or not all(re.fullmatch(r"-?\d+", p) for p in parts):
        raise ParseError(f"cannot read shape {text!r}: expected {SHAPE_FORM}")
    dims = [int(p) for p in parts]
    if any(d <= 0 for d in dims):
        raise ParseError(f"shape {text!r} has a dimension <= 0: expected {SHAPE_FORM}")
    if len(dims) == 3:
        return (None, *dims)
    return tuple(dims)


def format_bytes(n: int | float | None, digits: int = 2) -> str:
    """Binary units, stated: 1536 -> '1.50 KiB'."""
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.{digits}f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_seconds(s: float | None) -> str:
    if s is None or s != s:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"
