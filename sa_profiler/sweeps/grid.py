"""Sweep grids from the command line: comma lists and ranges.

    1,2,4,8        a list
    32:256:x2      32, 64, 128, 256 (multiply)
    32:256:+32     32, 64, ..., 256 (add)
    64x128,96      resolutions: HxW pairs, or R for a square R x R
"""

from __future__ import annotations

import re

from sa_profiler.units import ParseError

LIST_FORM = "a comma list of positive integers or ranges START:STOP:xFACTOR / START:STOP:+STEP, e.g. 1,2,4 or 32:256:x2"
RES_FORM = "a comma list of R (square) or HxW, or ranges START:STOP:xFACTOR / START:STOP:+STEP, e.g. 32:256:x2 or 64x128"
MAX_VALUES = 10_000


def _range(text: str, what: str, form: str) -> list[int]:
    m = re.fullmatch(r"(\d+):(\d+):([x+])(\d+)", text)
    if not m:
        raise ParseError(f"cannot read {what} {text!r}: expected {form}")
    start, stop, op, step = int(m.group(1)), int(m.group(2)), m.group(3), int(m.group(4))
    if start < 1 or stop < start:
        raise ParseError(f"{what} range {text!r} needs 1 <= START <= STOP: expected {form}")
    if (op == "x" and step < 2) or (op == "+" and step < 1):
        raise ParseError(f"{what} range {text!r} needs a factor >= 2 or a step >= 1: expected {form}")
    out, v = [], start
    while v <= stop:
        out.append(v)
        v = v * step if op == "x" else v + step
        if len(out) > MAX_VALUES:
            raise ParseError(f"{what} range {text!r} has more than {MAX_VALUES} values")
    return out


def parse_ints(text: str, what: str = "list") -> list[int]:
    out: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            raise ParseError(f"cannot read {what} {text!r}: empty item; expected {LIST_FORM}")
        if ":" in part:
            out += _range(part, what, LIST_FORM)
        elif re.fullmatch(r"-?\d+", part):
            if int(part) < 1:
                raise ParseError(f"{what} {text!r} has a value < 1: expected {LIST_FORM}")
            out.append(int(part))
        else:
            raise ParseError(f"cannot read {what} {text!r}: expected {LIST_FORM}")
    return list(dict.fromkeys(out))


def parse_resolutions(text: str) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            raise ParseError(f"cannot read resolutions {text!r}: empty item; expected {RES_FORM}")
        if ":" in part:
            out += [(r, r) for r in _range(part, "resolutions", RES_FORM)]
        elif m := re.fullmatch(r"(-?\d+)(?:[xX](-?\d+))?", part):
            h, w = int(m.group(1)), int(m.group(2) or m.group(1))
            if h < 1 or w < 1:
                raise ParseError(f"resolutions {text!r} have a size < 1: expected {RES_FORM}")
            out.append((h, w))
        else:
            raise ParseError(f"cannot read resolutions {text!r}: expected {RES_FORM}")
    return list(dict.fromkeys(out))
