"""The memory engine: simulate (meta tensors + allocator model) and measure (real devices)."""

from .measure import measure
from .simulate import simulate
from .workload import Record, TensorInfo, Workload, to_frame

__all__ = ["Record", "TensorInfo", "Workload", "measure", "simulate", "to_frame"]
