"""A sweep's results as a frame: loading, numeric columns, labels, the engine's largest batches."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


MiB = 2**20
NUMERIC = ("peak_bytes", "baseline_bytes", "total_bytes", "usable_bytes", "time_s", "tokens", "batch", "channels",
           "height", "width")
RESULTS_COLUMNS = ("impl", "dtype", "mode", "height", "width", "peak_bytes")
LARGEST_COLUMNS = ("impl", "per_image_bytes", "max_batch", "total_bytes", "time_s", "usable_bytes", "tokens",
                   "channels", "height", "width", "options", "message", "backend", "device_name")
MODE_TITLE = {"forward": "Inference (forward, no_grad)", "train": "Training (forward + backward)"}


class SweepFileError(ValueError):
    """A file of a sweep's folder that cannot be read; the message names it, why, and what was expected."""


# -- data ---------------------------------------------------------------------------------
def read_table(path: str | Path, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    """A CSV of a sweep's folder, with at least `columns`, or SweepFileError naming the file."""
    try:
        table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except OSError as err:
        why = err.strerror or str(err)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        why = f"not a CSV table ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    else:
        missing = [c for c in columns if c not in table]
        if not missing:
            return table
        why = f"it has no {', '.join(map(repr, missing))} column{'s' if len(missing) > 1 else ''}"
    raise SweepFileError(f"cannot read {str(path)!r}: {why}; expected {what}")


def read_meta(folder: str | Path) -> dict:
    """meta.json of a sweep's folder ({} where there is none), or SweepFileError naming it."""
    path = Path(folder) / "meta.json"
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_bytes())
    except OSError as err:
        why = err.strerror or str(err)
    except ValueError as err:  # not JSON, or not UTF-8
        why = f"not JSON ({err})"
    else:
        if isinstance(meta, dict):
            return meta
        why = f"a JSON {type(meta).__name__}, not an object"
    raise SweepFileError(f"cannot read {str(path)!r}: {why}; expected the meta.json a sweep writes "
                         "(or remove it: the report is made without it)")


def load(path: str | Path) -> pd.DataFrame:
    """A results.csv as a frame, one row per workload (the last row of a repeated key wins,
    and `frame.attrs['notes']` says so)."""
    from sa_profiler.sweeps.sweep import dedupe, duplicates_note

    frame = read_table(path, RESULTS_COLUMNS, "the results.csv of a sweep")
    notes = []
    if "key" in frame and frame.key.duplicated().any():
        rows, dropped = dedupe(frame.to_dict("records"))
        frame = pd.DataFrame(rows, columns=frame.columns)
        notes.append(duplicates_note(path, dropped, len(frame)))
    frame = prepare(frame)
    frame.attrs["notes"] = notes
    return frame


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    notes = frame.attrs.get("notes", [])
    frame = frame.drop(columns=[c for c in ("top_tensors", "host", "time_method") if c in frame])  # unused here
    for col in NUMERIC:
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    if "total_bytes" not in frame or frame["total_bytes"].isna().all():
        frame["total_bytes"] = frame["peak_bytes"] + frame["baseline_bytes"].fillna(0)
    for col in ("options", "message", "backend", "source", "device_name"):
        if col in frame:
            frame[col] = _text(frame[col])
    records = frame[[c for c in ("impl", "options", "dtype", "mode") if c in frame]].to_dict("records")
    frame["label"] = [_label(r) for r in records]
    frame["impl_name"] = [_impl_name(r) for r in records]
    frame["resolution"] = [f"{int(h)}x{int(w)}" for h, w in zip(frame.height, frame.width)]
    if "target" in frame and frame.target.nunique() > 1:  # an atlas: the device in every name
        frame["device"] = [_device(r) for r in frame.to_dict("records")]
        frame["label"] = frame.label + " @ " + frame.device
    frame.attrs["notes"] = notes
    return frame


def _text(col: pd.Series) -> list[str]:
    return ["" if v is None or v != v else str(v) for v in col]


def _options(row) -> dict:
    opts = row.get("options")
    try:
        return json.loads(opts) if isinstance(opts, str) and opts else {}
    except json.JSONDecodeError:
        return {"options": str(opts)}


def _label(row) -> str:
    # the chunk size follows the resolution in a sweep: leave it out so a line spans the grid
    extra = ",".join(f"{k}={v}" for k, v in _options(row).items() if k != "chunk")
    return f"{row['impl']}{'[' + extra + ']' if extra else ''} {row['dtype']} {row['mode']}"


def _impl_name(row) -> str:
    """The implementation as a reader names it (one colour in the plots): sdpa, sdpa:flash,
    chunked, pooled 2x2."""
    o = _options(row)
    name = str(row["impl"])
    if o.get("backend"):
        name += f":{o['backend']}"
    if o.get("layout"):
        name += f" {o['layout']}"
    if "pool" in o:
        name += f" {o['pool']}x{o['pool']}"
    return name


def _device(row) -> str:
    name = row.get("device_name")
    return str(name) if isinstance(name, str) and name else str(row["target"])


def load_largest(folder: str | Path) -> pd.DataFrame | None:
    """largest.csv of a sweep folder (`sweeps.largest` searches it), read; None where it is missing."""
    from sa_profiler.sweeps.largest import LARGEST

    path = Path(folder) / LARGEST
    if not path.exists():
        return None
    largest = read_table(path, LARGEST_COLUMNS, "the largest.csv a sweep writes (or remove it: it is searched "
                                                "again from the results)")
    for col in ("per_image_bytes", "max_batch", "total_bytes", "time_s", "usable_bytes", "tokens", "channels",
                "height", "width"):
        largest[col] = pd.to_numeric(largest[col], errors="coerce")
    for col in ("options", "message", "backend", "device_name"):
        largest[col] = _text(largest[col])
    largest["impl_name"] = [_impl_name(r) for r in largest.to_dict("records")]
    largest["resolution"] = [f"{int(h)}x{int(w)}" for h, w in zip(largest.height, largest.width)]
    return largest
