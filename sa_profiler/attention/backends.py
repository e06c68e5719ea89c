"""Which `scaled_dot_product_attention` backend runs where, by torch's own rules.

One place for the selection logic, used twice: by the `sdpa` layer to give a clear
error before torch's "No available kernel", and by the simulator to know which kernel a
GPU it does not have would run. Rules follow torch's
aten/src/ATen/native/transformers/cuda/sdp_utils.cpp (`can_use_flash_attention`,
`can_use_mem_efficient_attention`, `can_use_cudnn_attention`, `select_sdp_backend`) and
sdp_utils_cpp.cpp for CPU; the order is `Context::sDPPriorityOrder()` (flash, efficient,
math, cudnn), with cuDNN moved first where `check_prefer_cudnn_attention()` holds.

The rules that differ between torch releases are the rows of `TORCH_RULES`, with their source;
the selection reads their thresholds from there and nowhere else.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field

import torch

from sa_profiler import names, torch_compat
from sa_profiler.attention.sdpa_call import Call, mask_shape_refusal, shared_refusal

BACKENDS = names.BACKENDS
_LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class DeviceCaps:
    """What backend selection needs to know about a device."""

    kind: str  # "cuda" or "cpu"
    capability: tuple[int, int] | None = None
    cudnn_preferred: bool = False  # torch + cuDNN put cuDNN first on this device
    torch_version: str = ""  # the torch whose rules apply ("": the one running)
    cudnn_version: int | None = None  # the cuDNN runtime (None: not known, see assumed_cudnn)

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
def simulated_device(caps: DeviceCaps):
    """Meta tensors stand for tensors on `caps` while inside (`caps_for`); routing.simulating
    enters it with the routing mode."""
    token = _simulated_device.set(caps)
    try:
        yield caps
    finally:
        _simulated_device.reset(token)


def caps_for(device: torch.device) -> DeviceCaps:
    """Capabilities of the device a tensor lives on (the simulated one for meta)."""
    if device.type == "meta":
        return _simulated_device.get() or CPU
    if device.type == "cuda":
        cc = torch.cuda.get_device_capability(device)
        return DeviceCaps("cuda", cc, cudnn_preferred=local_cudnn_preferred(cc), torch_version=torch.__version__,
                          cudnn_version=_local_cudnn())
    return CPU


@dataclass(frozen=True)
class VersionRule:
    """One rule of torch's selection that differs between releases: the decision that reads it
    (`key`), the first release with it (`first`; "~": inferred from the pull request's merge date
    rather than read from a release branch; "all": every supported release), what it says, its
    source, and the thresholds the decision reads from it (`values`; capabilities as (major,
    minor), (major, None) for every minor; cuDNN versions as `torch.backends.cudnn.version()`)."""

    key: str
    first: str
    rule: str
    source: str
    values: dict = field(default_factory=dict, compare=False)

    @property
    def since(self) -> tuple[int, int]:
        return (0, 0) if self.first == "all" else _version_tuple(self.first.lstrip("~"))


# What changed in torch's selection (aten/src/ATen/native/transformers/cuda/sdp_utils.cpp) between
# torch 2.4 and 2.14. The selection reads its thresholds from these rows and nowhere else: for a
# torch release, the row of each key with the latest `first` up to it (`_applying`).
TORCH_RULES = (
    VersionRule("cudnn_first", "2.4", "cuDNN attention last in priority (opt-in)",
                "#125343 put it first on H100; reverted for 2.4 (#128539)", {"on": ()}),
    VersionRule("cudnn_head_dim", "~2.5", "cuDNN head sizes at most 128 on every architecture",
                "#130494 (the 256 of sm90 was forward-only)", {"limit": 128}),
    VersionRule("cudnn_first", "2.5.0", "cuDNN first on sm90, in 2.5.0 only", "2.5.1 made it opt-in again (#138522)",
                {"on": ((9, 0),), "release": "2.5.0"}),
    VersionRule("cudnn_head_dim", "~2.8", "cuDNN head sizes up to 256 on sm90 with cuDNN >= 9.5.1 (sm100: forward only)",
                "check_cudnn_tensor_shapes, #149904, #152076",
                {"limit": 128, "wide": 256, "wide_on": ((9, 0),), "wide_forward_on": ((10, 0),), "wide_cudnn": 90501}),
    VersionRule("cudnn_first", "2.9", "cuDNN first on sm90 and sm100", "check_prefer_cudnn_attention, #162073",
                {"on": ((9, 0), (10, 0))}),
    VersionRule("cudnn_first", "2.10", "cuDNN first on sm90/sm100/sm103 only with a cuDNN newer than 9.15 "
                "(CUDA < 13 builds: minor 0 or 3); TORCH_CUDNN_SDPA_DEPRIORITIZED=1 turns it off",
                "check_prefer_cudnn_attention, #169849", {"on": ((9, 0), (10, 0), (10, 3)), "cudnn": 91501}),
    VersionRule("cudnn_head_dim", "~2.13", "cuDNN head sizes up to 256 on sm90/sm10x only with cuDNN > 9.22 and "
                "cudnn-frontend >= 1.24, else 128 (192 for exactly q/k 192 with v 128, cuDNN >= 9.11); with grad and "
                "that d=256 support, the backward only for (<=128, <=128), (192, 128) or (256, 256)",
                "check_cudnn_tensor_shapes, check_cudnn_d256_bprop_head_dim, #185553, #185554",
                {"limit": 128, "wide": 256, "wide_on": ((9, 0), (10, None)), "wide_cudnn": 92201,  # > 9.22
                 "mid": 192, "mid_shape": (192, 128), "mid_cudnn": 91100,
                 "backward_max": 128, "backward_shapes": ((192, 128), (256, 256))}),
    VersionRule("cudnn_dropout", "~2.12", "cuDNN dropout probability a multiple of 1/16 (absent in 2.11: measured, an "
                "H100 ran BERT's dropout 0.1 on cuDNN, reports/validation/fit-zoo-h100-2.11.0.csv)",
                "check_cudnn_dropout", {"steps": 16}),
    VersionRule("efficient_alignment", "all", "memory-efficient head-size alignment: 8 for fp16/bf16 from sm70 (tensor "
                "cores), 4 for fp32 from sm80, otherwise 1 (so fp16 below sm70 aligns to 1)", "minimum_gemm_alignment",
                {"half": 8, "half_from": (7, 0), "fp32": 4, "fp32_from": (8, 0), "other": 1}),
)
TORCH_RANGE = tuple(torch_compat.version_tuple(v) for v in torch_compat.SUPPORTED)
_version_tuple = torch_compat.version_tuple

checked_torch_version = torch_compat.checked_torch_version  # torch-free: options are checked before torch loads


def _applying(key: str, torch_version: str) -> VersionRule | None:
    """The row of TORCH_RULES that decides `key` for `torch_version`: the latest `first` up to it
    (a row with a "release" value only in that release), or None before the first."""
    tv, release = _version_tuple(torch_version), torch_version.split("+")[0]
    rows = [r for r in TORCH_RULES if r.key == key and r.since <= tv and r.values.get("release", release) == release]
    return max(rows, key=lambda r: r.since, default=None)


def _on(capability: tuple[int, int], where) -> bool:
    """Whether `capability` is one of `where` ((major, None) stands for every minor)."""
    return any(w == capability or (w[1] is None and w[0] == capability[0]) for w in where)


def assumed_cudnn(torch_version: str, cudnn_version: int | None) -> int:
    """The cuDNN runtime to apply the gates with: the one given, else what torch's CUDA wheels
    of that version bundle as far as measured (9.19 with torch 2.11 on an H100), 9.5.1 before
    2.10. Assumed, not read: a CPU build has no cuDNN."""
    if cudnn_version is not None:
        return cudnn_version
    return 91900 if _version_tuple(torch_version) >= (2, 10) else 90501


def cudnn_preferred(capability: tuple[int, int], torch_version: str, cudnn_version: int | None) -> bool:
    """`check_prefer_cudnn_attention()` (sdp_utils.cpp) as TORCH_RULES' "cudnn_first" rows give it
    for `torch_version`: first on the row's capabilities (with a cuDNN of at least the row's),
    otherwise last. Without a known cuDNN version (a CPU build simulating a GPU), torch >= 2.10
    wheels bundle a cuDNN that passes the gate (`assumed_cudnn`)."""
    row = _applying("cudnn_first", torch_version)
    if row is None or not _on(capability, row.values["on"]):
        return False
    return "cudnn" not in row.values or assumed_cudnn(torch_version, cudnn_version) >= row.values["cudnn"]


def cudnn_head_dim_refusal(caps: DeviceCaps, d_qk: int, d_v: int, requires_grad: bool) -> str | None:
    """cuDNN attention's head-size rules for the torch of `caps`: TORCH_RULES' "cudnn_head_dim"
    row for it (sdp_utils.cpp `check_cudnn_tensor_shapes`, `check_cudnn_d256_bprop_head_dim`);
    before the first row (2.4), the first row's limit."""
    version = caps.torch_version or torch.__version__
    tv = _version_tuple(version)
    cudnn = assumed_cudnn(version, caps.cudnn_version)
    cc = caps.capability
    where = f"on {caps.label} with torch {'.'.join(map(str, tv))}"
    row = _applying("cudnn_head_dim", version) or next(r for r in TORCH_RULES if r.key == "cudnn_head_dim")
    v = row.values
    wide = "wide" in v and cudnn >= v["wide_cudnn"] and (
        _on(cc, v["wide_on"]) or (not requires_grad and _on(cc, v.get("wide_forward_on", ()))))
    limit = v["wide"] if wide else v["limit"]
    if (not wide and "mid" in v and _on(cc, v["wide_on"]) and cudnn >= v["mid_cudnn"]
            and (d_qk, d_v) == v["mid_shape"]):
        limit = v["mid"]
    if wide and requires_grad and "backward_shapes" in v:
        small, shapes = v["backward_max"], v["backward_shapes"]
        if not (max(d_qk, d_v) <= small or (d_qk, d_v) in shapes):
            runs = ", ".join([f"(<={small}, <={small})"] + [f"({a}, {b})" for a, b in shapes[:-1]])
            return (f"cuDNN attention's backward {where} runs head sizes {runs} or {shapes[-1]}, "
                    f"not ({d_qk}, {d_v})")
    for what, d in (("query/key", d_qk), ("value", d_v)):
        if d > limit or d % 8:
            return f"cuDNN attention {where} needs {what} head size <= {limit} and divisible by 8, not {d}"
    return None


def _local_cudnn() -> int | None:
    try:
        return torch.backends.cudnn.version()
    except Exception:  # pragma: no cover - builds without cuDNN
        return None


def local_cudnn_preferred(capability: tuple[int, int]) -> bool:
    return cudnn_preferred(capability, torch.__version__, _local_cudnn())



def _alignment(caps: DeviceCaps, dtype: torch.dtype) -> int:
    """`minimum_gemm_alignment` of the memory-efficient kernel (sdp_utils.cpp), as TORCH_RULES'
    "efficient_alignment" row gives it: 4 from sm80, raised to 128 bits of the dtype where tensor
    cores run it (`use_tensor_cores`: sm80+, or fp16/bf16 on sm7x); below sm70 no tensor cores,
    so 1 for every dtype."""
    v = next(r for r in TORCH_RULES if r.key == "efficient_alignment").values
    if caps.capability >= v["fp32_from"]:
        return v["fp32"] if dtype == torch.float32 else v["half"]
    if caps.capability >= v["half_from"]:
        return v["half"] if dtype in _LOW_PRECISION else v["other"]
    return v["other"]


def unsupported_reason(
    backend: str,
    caps: DeviceCaps,
    dtype: torch.dtype,
    d_qk: int,
    d_v: int,
    requires_grad: bool = False,
) -> str | None:
    """Why `backend` cannot run one-or-more-head attention with these head sizes, or None."""
    return refusal(backend, caps, Call.heads(dtype, d_qk, d_v, requires_grad))


def refusal(backend: str, caps: DeviceCaps, call: Call) -> str | None:
    """Why torch would not run `backend` for `call` on `caps`, or None: the `can_use_*`
    constraint lists of sdp_utils.cpp (CUDA) and sdp_utils_cpp.cpp (CPU), in their order."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown SDPA backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "math":
        return None
    if caps.kind == "cpu":
        return _cpu_refusal(backend, caps, call)
    return _CUDA_REFUSALS[backend](caps, call)


def _cpu_refusal(backend: str, caps: DeviceCaps, call: Call) -> str | None:
    """use_flash_attention_cpp: no dropout, 4-D, batch/heads (GQA allowed), mask shape, equal
    head dims, nonzero lengths, last-dim stride 1 (the mask's is not checked on CPU)."""
    dtype, d_qk, d_v = call.dtype, call.d_qk, call.d_v
    if backend != "flash":
        return f"the {backend} backend exists only on CUDA"
    if call.dropout > 0.0:
        return "the CPU flash kernel does not run dropout"
    why = shared_refusal(call, gqa=True, same_kv_heads=True, mask_stride=False, ignore_singleton=False)
    if why is None:
        why = mask_shape_refusal(call)
    if why is None and not (d_qk == call.k_shape[-1] == d_v):
        why = f"the CPU flash kernel needs equal head sizes (query/key {d_qk}, value {d_v})"
    if why is None and dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        why = f"the CPU flash kernel does not support {_name(dtype)}"
    return why


def _flash_refusal(caps: DeviceCaps, call: Call) -> str | None:
    """can_use_flash_attention: shapes, no mask, equal head dims <= 256, sm80-sm121, the
    sm86/89/120 backward limit, causal needs L == S, fp16/bf16; then the dense checks."""
    dtype, d_qk, d_v, cc, where = call.dtype, call.d_qk, call.d_v, caps.capability, f"on {caps.label}"
    if len(call.q_shape) != 4 or len(call.k_shape) != 4 or len(call.v_shape) != 4:
        return "flash attention needs 4-D query/key/value"
    if call.mask_shape is not None:
        return "flash attention does not take an attention mask"
    if not (d_qk == call.k_shape[-1] == d_v):
        return f"flash attention needs equal head sizes (query/key {d_qk}, value {d_v})"
    if d_qk > 256:
        return f"flash attention supports head sizes up to 256, not {d_qk}"
    if not (8, 0) <= cc <= (12, 1):
        return f"flash attention needs compute capability 8.0 to 12.1, not {cc[0]}.{cc[1]}"
    if call.requires_grad and cc in ((8, 6), (8, 7), (8, 8), (8, 9), (12, 0), (12, 1)):
        if not (d_qk <= 192 or (call.dropout == 0.0 and d_qk > 224)):
            return f"flash attention backward {where} supports head sizes up to 192 or above 224 (no dropout)"
    if call.is_causal and call.q_shape[2] != call.k_shape[2]:
        return "flash attention runs is_causal only with equal query and key lengths"
    if dtype not in _LOW_PRECISION:
        return f"flash attention runs only float16/bfloat16, not {_name(dtype)}"
    return shared_refusal(call, gqa=True, same_kv_heads=True, mask_stride=True, ignore_singleton=True)


def _efficient_refusal(caps: DeviceCaps, call: Call) -> str | None:
    """can_use_mem_efficient_attention: sm50-sm121, shapes, head dims (q == k, aligned), pointer
    alignment on sm80+, dense checks, then dtypes by architecture."""
    dtype, d_qk, d_v, cc, where = call.dtype, call.d_qk, call.d_v, caps.capability, f"on {caps.label}"
    if not (5, 0) <= cc <= (12, 1):
        return f"memory-efficient attention needs compute capability 5.0 to 12.1, not {cc[0]}.{cc[1]}"
    if len(call.q_shape) != 4 or len(call.k_shape) != 4 or len(call.v_shape) != 4:
        return "memory-efficient attention needs 4-D query/key/value"
    align = _alignment(caps, dtype)
    if d_qk != call.k_shape[-1]:
        return f"memory-efficient attention needs equal query and key head sizes ({d_qk}, {call.k_shape[-1]})"
    for what, d in (("query/key", d_qk), ("value", d_v)):
        if d % align or d <= 0:
            return f"memory-efficient attention {where} needs {what} head size divisible by {align}, not {d}"
    if cc >= (8, 0):
        item = torch.empty((), dtype=dtype, device="meta").element_size()
        if any(off % (align * item) for off in call.offsets_aligned):
            return f"memory-efficient attention {where} needs q/k/v storage offsets aligned to {align * item} bytes"
    why = shared_refusal(call, gqa=True, same_kv_heads=True, mask_stride=True, ignore_singleton=False)
    if why:
        return why
    allowed = (torch.float16, torch.float32) + ((torch.bfloat16,) if cc >= (8, 0) else ())
    if dtype not in allowed:
        return f"memory-efficient attention {where} does not run {_name(dtype)}"
    return None


def _cudnn_refusal(caps: DeviceCaps, call: Call) -> str | None:
    """can_use_cudnn_attention, with its version-dependent gates read from TORCH_RULES."""
    dtype, d_qk, d_v, cc = call.dtype, call.d_qk, call.d_v, caps.capability
    if not hasattr(torch.nn.attention.SDPBackend, "CUDNN_ATTENTION"):
        return "this torch has no cuDNN attention backend"
    if len(call.q_shape) != 4 or len(call.k_shape) != 4 or len(call.v_shape) != 4:
        return "cuDNN attention needs 4-D query/key/value"
    if dtype not in _LOW_PRECISION:
        return f"cuDNN attention runs only float16/bfloat16, not {_name(dtype)}"
    why = mask_shape_refusal(call)
    if why:
        return why
    if not (8, 0) <= cc <= (12, 1):
        return f"cuDNN attention needs compute capability 8.0 to 12.1, not {cc[0]}.{cc[1]}"
    gate = _applying("cudnn_dropout", caps.torch_version or torch.__version__)  # TORCH_RULES
    if gate is not None and call.dropout * gate.values["steps"] != int(call.dropout * gate.values["steps"]):
        return f"cuDNN attention needs a dropout probability that is a multiple of 1/{gate.values['steps']}"
    why = shared_refusal(call, gqa=True, same_kv_heads=False, mask_stride=True, ignore_singleton=True)
    if why:
        return why
    b, h = call.q_shape[0], call.q_shape[1]
    if b > 65535 or h > 65535:
        return "cuDNN attention supports batch and head counts up to 65535"
    # check_cudnn_tensor_shapes / check_cudnn_d256_bprop_head_dim by torch version (TORCH_RULES;
    # measured: value head size 256 runs on an H100 with torch 2.11 + cuDNN 9.19); S_k != 1
    why = cudnn_head_dim_refusal(caps, d_qk, d_v, call.requires_grad)
    if why:
        return why
    if call.k_shape[2] == 1:
        return "cuDNN attention does not run a key length of 1"
    if call.dropout != 0.0 and call.q_shape[2] == 1:
        return "cuDNN attention does not run a query length of 1 with dropout"
    return None


_CUDA_REFUSALS = {"flash": _flash_refusal, "efficient": _efficient_refusal, "cudnn": _cudnn_refusal}


def priority(caps: DeviceCaps) -> tuple[str, ...]:
    if caps.kind == "cpu":
        return ("flash", "math")
    order = ("flash", "efficient", "math", "cudnn")
    if caps.cudnn_preferred:
        order = ("cudnn",) + tuple(b for b in order if b != "cudnn")
    return order


def select(caps: DeviceCaps, dtype: torch.dtype, d_qk: int, d_v: int, requires_grad: bool = False) -> str:
    """The backend torch would pick for a dense call with these head sizes."""
    return select_call(caps, Call.heads(dtype, d_qk, d_v, requires_grad))


def select_call(caps: DeviceCaps, call: Call, enabled: tuple[str, ...] = BACKENDS) -> str | None:
    """The backend torch would pick (`select_sdp_backend`): the first in priority order that is
    enabled (`torch.backends.cuda.*_sdp_enabled`, `sdpa_kernel`) and can run; None when none
    can ("No available kernel")."""
    for backend in priority(caps):
        if backend in enabled and refusal(backend, caps, call) is None:
            return backend
    return None


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")
