"""Which `scaled_dot_product_attention` backend runs where, by torch's own rules.

One place for the selection logic, used twice: by the `sdpa` layer to give a clear
error before torch's "No available kernel", and by the simulator to know which kernel a
GPU it does not have would run. Rules follow torch's
aten/src/ATen/native/transformers/cuda/sdp_utils.cpp (`can_use_flash_attention`,
`can_use_mem_efficient_attention`, `can_use_cudnn_attention`, `select_sdp_backend`) and
sdp_utils_cpp.cpp for CPU; the order is `Context::sDPPriorityOrder()` (flash, efficient,
math, cudnn), with cuDNN moved first where `check_prefer_cudnn_attention()` holds.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

import torch

BACKENDS = ("math", "efficient", "flash", "cudnn")
_LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class DeviceCaps:
    """What backend selection needs to know about a device."""

    kind: str  # "cuda" or "cpu"
    capability: tuple[int, int] | None = None
    cudnn_preferred: bool = False  # torch + cuDNN put cuDNN first on this device

    @property
    def label(self) -> str:
        if self.kind == "cpu":
            return "CPU"
        return f"sm{self.capability[0]}{self.capability[1]}"


CPU = DeviceCaps("cpu")

# The device a simulation pretends to run on. Meta tensors carry no device facts, so the
# engine sets this while it runs a workload on `device="meta"`.
_simulated_device: contextvars.ContextVar[DeviceCaps | None] = contextvars.ContextVar(
    "sa_profiler_simulated_device", default=None
)


@contextlib.contextmanager
def simulating(caps: DeviceCaps):
    token = _simulated_device.set(caps)
    try:
        yield
    finally:
        _simulated_device.reset(token)


def caps_for(device: torch.device) -> DeviceCaps:
    """Capabilities of the device a tensor lives on (the simulated one for meta)."""
    if device.type == "meta":
        return _simulated_device.get() or CPU
    if device.type == "cuda":
        cc = torch.cuda.get_device_capability(device)
        return DeviceCaps("cuda", cc, cudnn_preferred=local_cudnn_preferred(cc))
    return CPU


def cudnn_preferred(capability: tuple[int, int], torch_version: str, cudnn_version: int | None) -> bool:
    """`check_prefer_cudnn_attention()` (sdp_utils.cpp): cuDNN goes first on sm90/sm100/sm103
    when the cuDNN runtime is newer than 9.15 (torch >= 2.10; 2.9 enabled it unconditionally
    for SM 9.0/10.0, #162073). Without a known cuDNN version (a CPU build simulating a GPU),
    torch >= 2.10 wheels bundle a cuDNN that passes the gate."""
    major, minor = _version_tuple(torch_version)
    if capability not in ((9, 0), (10, 0), (10, 3)):
        return False
    if (major, minor) >= (2, 10):
        return cudnn_version is None or cudnn_version > 91500
    return (major, minor) == (2, 9)


def local_cudnn_preferred(capability: tuple[int, int]) -> bool:
    try:
        cudnn = torch.backends.cudnn.version()
    except Exception:  # pragma: no cover - builds without cuDNN
        cudnn = None
    return cudnn_preferred(capability, torch.__version__, cudnn)


def _version_tuple(version: str) -> tuple[int, int]:
    parts = version.split("+")[0].split(".")
    return int(parts[0]), int(parts[1])


def _alignment(caps: DeviceCaps, dtype: torch.dtype) -> int:
    """`minimum_gemm_alignment` of the memory-efficient kernel (sdp_utils.cpp)."""
    if caps.capability >= (8, 0):
        return 4 if dtype == torch.float32 else 8
    return 8 if dtype in _LOW_PRECISION else 1


def unsupported_reason(
    backend: str,
    caps: DeviceCaps,
    dtype: torch.dtype,
    d_qk: int,
    d_v: int,
    requires_grad: bool = False,
) -> str | None:
    """Why `backend` cannot run one-or-more-head attention with these head sizes, or None."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown SDPA backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "math":
        return None
    if caps.kind == "cpu":
        if backend != "flash":
            return f"the {backend} backend exists only on CUDA"
        if dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            return f"the CPU flash kernel does not support {dtype}"
        if d_qk != d_v:
            return f"the CPU flash kernel needs equal head sizes (query/key {d_qk}, value {d_v})"
        return None
    cc = caps.capability
    where = f"on {caps.label}"
    if backend == "flash":
        if not (8, 0) <= cc <= (12, 1):
            return f"flash attention needs compute capability 8.0 to 12.1, not {cc[0]}.{cc[1]}"
        if dtype not in _LOW_PRECISION:
            return f"flash attention runs only float16/bfloat16, not {_name(dtype)}"
        if d_qk != d_v:
            return f"flash attention needs equal head sizes (query/key {d_qk}, value {d_v})"
        if d_qk > 256:
            return f"flash attention supports head sizes up to 256, not {d_qk}"
        if requires_grad and cc in ((8, 6), (8, 9), (12, 0), (12, 1)) and 192 < d_qk <= 224:
            return f"flash attention backward {where} supports head sizes up to 192 or above 224"
        return None
    if backend == "efficient":
        if cc < (5, 0):
            return f"memory-efficient attention needs compute capability 5.0, not {cc[0]}.{cc[1]}"
        allowed = (torch.float16, torch.float32) + ((torch.bfloat16,) if cc >= (8, 0) else ())
        if dtype not in allowed:
            return f"memory-efficient attention {where} does not run {_name(dtype)}"
        align = _alignment(caps, dtype)
        for what, d in (("query/key", d_qk), ("value", d_v)):
            if d % align:
                return f"memory-efficient attention {where} needs {what} head size divisible by {align}, not {d}"
        return None
    # cudnn
    if not hasattr(torch.nn.attention.SDPBackend, "CUDNN_ATTENTION"):
        return "this torch has no cuDNN attention backend"
    if not (8, 0) <= cc <= (12, 1):
        return f"cuDNN attention needs compute capability 8.0 to 12.1, not {cc[0]}.{cc[1]}"
    if dtype not in _LOW_PRECISION:
        return f"cuDNN attention runs only float16/bfloat16, not {_name(dtype)}"
    # head sizes up to 128, or 256 on sm90/sm100/sm103 (sdp_utils.cpp check_cudnn_head_dim;
    # measured: value head size 256 runs on an H100 with torch 2.11 + cuDNN 9.19)
    limit = 256 if cc in ((9, 0), (10, 0), (10, 3)) else 128
    for what, d in (("query/key", d_qk), ("value", d_v)):
        if d > limit or d % 8:
            return f"cuDNN attention {where} needs {what} head size <= {limit} and divisible by 8, not {d}"
    return None


def priority(caps: DeviceCaps) -> tuple[str, ...]:
    if caps.kind == "cpu":
        return ("flash", "math")
    order = ("flash", "efficient", "math", "cudnn")
    if caps.cudnn_preferred:
        order = ("cudnn",) + tuple(b for b in order if b != "cudnn")
    return order


def select(caps: DeviceCaps, dtype: torch.dtype, d_qk: int, d_v: int, requires_grad: bool = False) -> str:
    """The backend torch would pick: the first in priority order that can run."""
    for backend in priority(caps):
        if unsupported_reason(backend, caps, dtype, d_qk, d_v, requires_grad) is None:
            return backend
    return "math"


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")
