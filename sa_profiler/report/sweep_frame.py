"""A sweep's results as a frame: loading, numeric columns, labels, the engine's largest batches."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


MiB = 2**20
NUMERIC = ("peak_bytes", "baseline_bytes", "total_bytes", "usable_bytes", "time_s", "tokens", "batch", "channels",
           "height", "width")
MODE_TITLE = {"forward": "Inference (forward, no_grad)", "train": "Training (forward + backward)"}


# -- data ---------------------------------------------------------------------------------
def load(path: str | Path) -> pd.DataFrame:
    """A results.csv as a frame, one row per workload (the last row of a repeated key wins,
    and `frame.attrs['notes']` says so)."""
    from sa_profiler.sweeps.sweep import dedupe, duplicates_note

    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
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


def load_largest(folder: str | Path, frame: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """largest.csv of a sweep folder; searched from the results (and written) when missing."""
    from sa_profiler.advice import batch_search

    path = Path(folder) / batch_search.LARGEST
    if not path.exists():
        if frame is None or "usable_bytes" not in frame or not frame.usable_bytes.notna().any():
            return None
        rows = [{k: ("" if v is None or v != v else v) for k, v in r.items()} for r in frame.to_dict("records")]
        batch_search.write(batch_search.search(rows), folder)
    largest = pd.read_csv(path, keep_default_na=False, na_values=[""])
    for col in ("per_image_bytes", "max_batch", "total_bytes", "time_s", "usable_bytes", "tokens", "channels",
                "height", "width"):
        largest[col] = pd.to_numeric(largest[col], errors="coerce")
    for col in ("options", "message", "backend", "device_name"):
        largest[col] = _text(largest[col])
    largest["impl_name"] = [_impl_name(r) for r in largest.to_dict("records")]
    largest["resolution"] = [f"{int(h)}x{int(w)}" for h, w in zip(largest.height, largest.width)]
    return largest
