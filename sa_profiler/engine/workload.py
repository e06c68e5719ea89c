"""What to run (`Workload`) and what came of it (`Record`): one schema for both engines."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field, fields
from typing import Protocol, runtime_checkable

import torch

from sa_profiler import names

DTYPES = {alias: getattr(torch, name) for alias, name in names.DTYPE_NAMES.items()}
MODES = ("forward", "train")


def dtype_name(dtype: str | torch.dtype) -> str:
    if isinstance(dtype, torch.dtype):
        return str(dtype).replace("torch.", "")
    return names.dtype_name(dtype)


@dataclass(frozen=True)
class Workload:
    """One attention layer step. `target` is a GPU catalogue key, `custom-<bytes>`, `cuda`
    (the local card) or `cpu`. `options` are the implementation's constructor options."""

    impl: str
    batch: int
    channels: int
    height: int
    width: int
    dtype: str = "float32"
    mode: str = "forward"
    target: str = "cpu"
    options: tuple[tuple[str, object], ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        if isinstance(self.options, dict):
            object.__setattr__(self, "options", tuple(sorted(self.options.items())))
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; expected one of {', '.join(MODES)}")
        for name in ("batch", "channels", "height", "width"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def tokens(self) -> int:
        return self.height * self.width

    @property
    def image_bytes(self) -> int:
        """One image of the layer's input (in a step's baseline, so not in its peak)."""
        return self.channels * self.height * self.width * self.torch_dtype.itemsize

    @property
    def label(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options)
        return f"{self.impl}{'[' + opts + ']' if opts else ''}"

    @property
    def key(self) -> str:
        """Identity of a workload in a results table (for resume)."""
        return "|".join(str(x) for x in (self.label, self.batch, self.channels, self.height, self.width,
                                         self.dtype, self.mode, self.target))

    def with_batch(self, batch: int) -> "Workload":
        return Workload(self.impl, batch, self.channels, self.height, self.width, self.dtype, self.mode,
                        self.target, self.options)


@dataclass
class TensorInfo:
    """A tensor alive at the peak."""

    shape: tuple[int, ...]
    dtype: str
    bytes: int
    op: str
    note: str = ""
    phase: str = ""  # forward, backward, optimizer (whole-model steps)
    module: str = ""  # the top-level module running when it was allocated
    attention: bool = False  # allocated inside an attention layer (its forward or backward)

    @property
    def where(self) -> str:
        return where(self.module, self.attention)


def where(module: str, attention: bool) -> str:
    """A module as a reader sees it: `blocks.0/attention` inside an attention layer."""
    return "/".join(p for p in (module, "attention" if attention else "") if p)


@runtime_checkable
class Outcome(Protocol):
    """What came of one step, a layer's (`Record`) or a whole model's (`models.fit.StepResult`),
    as the largest-batch search and every verdict read it: the status ("ok", "oom", ...) and the
    bytes, baseline (parameters, input, workspaces) and peak over it."""

    status: str

    @property
    def peak_bytes(self) -> int | None: ...

    @property
    def baseline_bytes(self) -> int | None: ...


@dataclass
class Record:
    workload: Workload
    peak_bytes: int | None = None  # peak over the baseline (max_memory_allocated - baseline)
    baseline_bytes: int | None = None  # parameters, input, persistent workspaces
    time_s: float | None = None
    time_method: str = ""
    status: str = "ok"
    message: str = ""
    source: str = "simulated"
    backend: str = ""
    top_tensors: list[TensorInfo] = field(default_factory=list)
    torch_version: str = field(default_factory=lambda: torch.__version__)
    device_name: str = ""
    host: str = field(default_factory=platform.node)

    def to_row(self) -> dict:
        """A flat dict (a DataFrame / CSV row); top tensors as JSON text."""
        row = {f.name: getattr(self.workload, f.name) for f in fields(Workload) if f.name != "options"}
        row["options"] = json.dumps(dict(self.workload.options), sort_keys=True)
        row["tokens"] = self.workload.tokens
        row["key"] = self.workload.key
        for f in fields(self):
            if f.name in ("workload", "top_tensors"):
                continue
            row[f.name] = getattr(self, f.name)
        row["top_tensors"] = json.dumps([asdict(t) for t in self.top_tensors])
        return row

    def to_json(self) -> dict:
        row = self.to_row()
        row["options"] = dict(self.workload.options)
        row["top_tensors"] = [asdict(t) for t in self.top_tensors]
        return row

    @classmethod
    def from_row(cls, row: dict) -> "Record":
        def _int(v):
            return None if v is None or v != v or v == "" else int(v)

        def _float(v):
            return None if v is None or v != v or v == "" else float(v)

        opts = row.get("options") or "{}"
        opts = json.loads(opts) if isinstance(opts, str) else dict(opts)
        w = Workload(row["impl"], int(row["batch"]), int(row["channels"]), int(row["height"]), int(row["width"]),
                     row["dtype"], row["mode"], row["target"], tuple(sorted(opts.items())))
        tops = row.get("top_tensors") or "[]"
        tops = json.loads(tops) if isinstance(tops, str) else tops
        return cls(
            w, _int(row.get("peak_bytes")), _int(row.get("baseline_bytes")), _float(row.get("time_s")),
            _str(row.get("time_method")), _str(row.get("status")) or "ok", _str(row.get("message")),
            _str(row.get("source")) or "simulated", _str(row.get("backend")),
            [TensorInfo(tuple(t["shape"]), t["dtype"], t["bytes"], t["op"], t.get("note", ""), t.get("phase", ""),
                        t.get("module", ""), bool(t.get("attention", False))) for t in tops],
            _str(row.get("torch_version")), _str(row.get("device_name")), _str(row.get("host")),
        )


def _str(v) -> str:
    return "" if v is None or (isinstance(v, float) and v != v) else str(v)


def to_frame(records):
    import pandas as pd

    return pd.DataFrame([r.to_row() for r in records])
