"""The memory engine: simulate (meta tensors + allocator model) and measure (real devices)."""

from sa_profiler.engine.measure import measure
from sa_profiler.engine.simulate import simulate
from sa_profiler.engine.workload import Record, TensorInfo, Workload, to_frame

__all__ = ["Record", "TensorInfo", "Workload", "measure", "simulate", "to_frame"]
