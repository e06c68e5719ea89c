"""Files written whole or not at all: a temporary name beside the target, flushed, fsynced,
then renamed over it, so a reader never sees half a file and a crash loses nothing written."""

from __future__ import annotations

import csv
import os
from pathlib import Path


def _replace(path: str | Path, write, newline: str | None = None) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline=newline, encoding="utf-8") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return _replace(path, lambda fh: fh.write(text))


def write_csv(path: str | Path, rows: list[dict], columns: list[str]) -> Path:
    def write(fh):
        writer = csv.DictWriter(fh, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    return _replace(path, write, newline="")
