"""One writer per output folder: an OS lock (`flock`) on `DIR/.lock`.

The kernel releases a `flock` when its process ends, however it ends, so a SIGKILLed sweep
leaves no stale lock: the file may stay, the lock does not. The holder writes its pid into the
file, so a second writer can say who holds the folder. Within one process the lock is
re-entrant (the sweep and the report it writes share it)."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

LOCK = ".lock"
_held: dict[str, list] = {}  # resolved folder -> [open file, depth]


class FolderBusy(ValueError):
    """Another process writes into the folder (the message is one line for the user)."""


def holder(folder: str | Path) -> int | None:
    """The pid written by the process that holds (or last held) the folder's lock."""
    try:
        text = (Path(folder) / LOCK).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@contextmanager
def folder_lock(folder: str | Path):
    """Hold `folder` for writing, or raise FolderBusy naming the folder and the holder's pid."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FolderBusy(f"cannot use {folder} as the sweep's folder: {err.strerror or err}; "
                         "expected a folder (a new one, or one a sweep wrote)") from None
    key = str(folder.resolve())
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    try:
        fh = open(folder / LOCK, "a+")
    except OSError as err:
        raise FolderBusy(f"cannot write into {folder}: {err.strerror or err}; expected a folder you can write "
                         "(choose another --out)") from None
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        pid = holder(folder)
        who = f"process {pid}" if pid else "another process"
        raise FolderBusy(f"{folder} is in use by {who} (another sweep writing there); wait for it to finish, "
                         "or choose another --out") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    _held[key] = [fh, 1]
    try:
        yield
    finally:
        _held[key][1] -= 1
        if _held[key][1] == 0:
            del _held[key]
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()
