"""Which `scaled_dot_product_attention` backend runs where, by torch's own rules.

One place for the selection logic, used twice: by the `sdpa` layer to give a clear
error before torch's "No available kernel", and by the simulator to know which kernel a
GPU it does not have would run. Rules follow torch's
aten/src/ATen/native/transformers/cuda/sdp_utils.cpp (`can_use_flash_attention`,
`can_use_mem_efficient_attention`, `can_use_cudnn_attention`, `select_sdp_backend`) and
sdp_utils_cpp.cpp for CPU; the order is `Context::sDPPriorityOrder()` (flash, efficient,
math, cudnn), with cuDNN moved first where `check_prefer_cudnn_attention()` holds.

Over 400 lines on purpose: torch's selection is one function across its four backends and
their version differences, and reading it side by side with sdp_utils.cpp is how it is checked.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

import torch

from sa_profiler import names, torch_compat

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
    first: str  # the first torch release with the rule (inferred from the merge date where marked)
    rule: str
    source: str


# What changed in torch's selection (aten/src/ATen/native/transformers/cuda/sdp_utils.cpp) between
# torch 2.4 and 2.14, and is applied here by version. "~" marks a first release inferred from the
# pull request's merge date rather than read from a release branch.
TORCH_RULES = (
    VersionRule("2.4", "cuDNN attention last in priority (opt-in)", "#125343 put it first on H100; reverted for 2.4 (#128539)"),
    VersionRule("~2.5", "cuDNN head sizes at most 128 on every architecture",
                "#130494 (the 256 of sm90 was forward-only)"),
    VersionRule("2.5.0", "cuDNN first on sm90, in 2.5.0 only", "2.5.1 made it opt-in again (#138522)"),
    VersionRule("~2.8", "cuDNN head sizes up to 256 on sm90 with cuDNN >= 9.5.1 (sm100: forward only)",
                "check_cudnn_tensor_shapes, #149904, #152076"),
    VersionRule("2.9", "cuDNN first on sm90 and sm100", "check_prefer_cudnn_attention, #162073"),
    VersionRule("2.10", "cuDNN first on sm90/sm100/sm103 only with a cuDNN newer than 9.15 "
                "(CUDA < 13 builds: minor 0 or 3); TORCH_CUDNN_SDPA_DEPRIORITIZED=1 turns it off",
                "check_prefer_cudnn_attention, #169849"),
    VersionRule("~2.13", "cuDNN head sizes up to 256 on sm90/sm10x only with cuDNN > 9.22 and cudnn-frontend "
                ">= 1.24, else 128 (192 for exactly q/k 192 with v 128, cuDNN >= 9.11); with grad and that d=256 "
                "support, the backward only for (<=128, <=128), (192, 128) or (256, 256)",
                "check_cudnn_tensor_shapes, check_cudnn_d256_bprop_head_dim, #185553, #185554"),
    VersionRule("~2.12", "cuDNN dropout probability a multiple of 1/16 (absent in 2.11: measured, an H100 ran "
                "BERT's dropout 0.1 on cuDNN, reports/validation/fit-zoo-h100-2.11.0.csv)", "check_cudnn_dropout"),
    VersionRule("all", "memory-efficient head-size alignment: 8 for fp16/bf16 from sm70 (tensor cores), 4 for "
                "fp32 from sm80, otherwise 1 (so fp16 below sm70 aligns to 1)", "minimum_gemm_alignment"),
)
TORCH_RANGE = tuple(torch_compat.version_tuple(v) for v in torch_compat.SUPPORTED)

checked_torch_version = torch_compat.checked_torch_version  # torch-free: options are checked before torch loads


def assumed_cudnn(torch_version: str, cudnn_version: int | None) -> int:
    """The cuDNN runtime to apply the gates with: the one given, else what torch's CUDA wheels
    of that version bundle as far as measured (9.19 with torch 2.11 on an H100), 9.5.1 before
    2.10. Assumed, not read: a CPU build has no cuDNN."""
    if cudnn_version is not None:
        return cudnn_version
    return 91900 if _version_tuple(torch_version) >= (2, 10) else 90501


def cudnn_preferred(capability: tuple[int, int], torch_version: str, cudnn_version: int | None) -> bool:
    """`check_prefer_cudnn_attention()` (sdp_utils.cpp) by version (TORCH_RULES): first on
    sm90/sm100/sm103 with a cuDNN newer than 9.15 from 2.10, on sm90/sm100 in 2.9, on sm90 in
    2.5.0, otherwise last. Without a known cuDNN version (a CPU build simulating a GPU),
    torch >= 2.10 wheels bundle a cuDNN that passes the gate."""
    major, minor = _version_tuple(torch_version)
    if capability not in ((9, 0), (10, 0), (10, 3)):
        return False
    if (major, minor) >= (2, 10):
        return assumed_cudnn(torch_version, cudnn_version) > 91500
    if (major, minor) == (2, 9):
        return capability in ((9, 0), (10, 0))
    return torch_version.split("+")[0] == "2.5.0" and capability == (9, 0)  # "2.5": the latest 2.5.x


def cudnn_head_dim_refusal(caps: DeviceCaps, d_qk: int, d_v: int, requires_grad: bool) -> str | None:
    """cuDNN attention's head-size rules for the torch of `caps` (TORCH_RULES; sdp_utils.cpp
    `check_cudnn_tensor_shapes`, `check_cudnn_d256_bprop_head_dim`)."""
    version = caps.torch_version or torch.__version__
    tv = _version_tuple(version)
    cudnn = assumed_cudnn(version, caps.cudnn_version)
    cc = caps.capability
    sm90_10x = cc == (9, 0) or cc[0] == 10
    where = f"on {caps.label} with torch {'.'.join(map(str, tv))}"
    if tv >= (2, 13):
        d256 = sm90_10x and cudnn > 92200  # and cudnn-frontend >= 1.24, which these torches build with
        limit = 256 if d256 else 192 if (sm90_10x and cudnn >= 91100 and (d_qk, d_v) == (192, 128)) else 128
        if d256 and requires_grad and not (max(d_qk, d_v) <= 128 or (d_qk, d_v) in ((192, 128), (256, 256))):
            return f"cuDNN attention's backward {where} runs head sizes (<=128, <=128), (192, 128) or (256, 256), not ({d_qk}, {d_v})"
    elif tv >= (2, 8):
        limit = 256 if (cudnn >= 90501 and (cc == (9, 0) or (cc == (10, 0) and not requires_grad))) else 128
    else:
        limit = 128
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


_version_tuple = torch_compat.version_tuple


def _alignment(caps: DeviceCaps, dtype: torch.dtype) -> int:
    """`minimum_gemm_alignment` of the memory-efficient kernel (sdp_utils.cpp): 4 from sm80, raised
    to 128 bits of the dtype where tensor cores run it (`use_tensor_cores`: sm80+, or fp16/bf16 on
    sm7x); below sm70 no tensor cores, so 1 for every dtype."""
    if caps.capability >= (8, 0):
        return 4 if dtype == torch.float32 else 8
    if caps.capability >= (7, 0):
        return 8 if dtype in _LOW_PRECISION else 1
    return 1


@dataclass(frozen=True)
class Call:
    """What torch's selection reads from one `scaled_dot_product_attention` call (the
    `sdp_params` of sdp_utils_cpp.h): shapes, the last-dim strides, the mask, dropout,
    causality, GQA and whether autograd will need the backward."""

    dtype: torch.dtype
    q_shape: tuple[int, ...]
    k_shape: tuple[int, ...]
    v_shape: tuple[int, ...]
    last_strides: tuple[int, int, int] = (1, 1, 1)
    mask_shape: tuple[int, ...] | None = None
    mask_last_stride: int = 1
    mask_requires_grad: bool = False
    dropout: float = 0.0
    is_causal: bool = False
    enable_gqa: bool = False
    requires_grad: bool = False
    offsets_aligned: tuple[int, int, int] = (0, 0, 0)  # storage_offset * element_size per q/k/v

    @classmethod
    def of(cls, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, enable_gqa=False) -> "Call":
        """From the tensors of a call; `requires_grad` as `input_requires_grad` (sdp_utils_cpp.h):
        grad mode on and any of q, k, v requiring grad."""
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        return cls(q.dtype, tuple(q.shape), tuple(k.shape), tuple(v.shape),
                   (q.stride(-1), k.stride(-1), v.stride(-1)),
                   None if attn_mask is None else tuple(attn_mask.shape),
                   1 if attn_mask is None or attn_mask.dim() == 0 else attn_mask.stride(-1),
                   bool(attn_mask is not None and attn_mask.requires_grad),
                   float(dropout_p), bool(is_causal), bool(enable_gqa), grad,
                   tuple(t.storage_offset() * t.element_size() for t in (q, k, v)))

    @classmethod
    def heads(cls, dtype: torch.dtype, d_qk: int, d_v: int, requires_grad: bool = False,
              batch: int = 1, heads: int = 1, seq_q: int = 2, seq_k: int = 2) -> "Call":
        """A dense, contiguous call described by its head sizes (the SAGAN layer's)."""
        return cls(dtype, (batch, heads, seq_q, d_qk), (batch, heads, seq_k, d_qk), (batch, heads, seq_k, d_v),
                   requires_grad=requires_grad)

    @property
    def d_qk(self) -> int:
        return self.q_shape[-1]

    @property
    def d_v(self) -> int:
        return self.v_shape[-1]


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


def _shared_refusal(caps: DeviceCaps, call: Call, *, gqa: bool, same_kv_heads: bool, mask_stride: bool,
                    ignore_singleton: bool) -> str | None:
    """The dense-input checks every fused kernel makes (sdp_utils_cpp.h): 4-D q/k/v
    (`check_tensor_shapes`), equal batch and head counts unless GQA
    (`check_batch_size_and_num_heads_dense`, `check_grouped_query_attention`), nonzero
    sequence lengths, and stride 1 in the last dim (`check_last_dim_stride_equals_1_dense`;
    the mask's too, on CUDA)."""
    q, k, v = call.q_shape, call.k_shape, call.v_shape
    if not (len(q) == len(k) == len(v) == 4):
        return f"fused kernels need 4-D query/key/value, not {len(q)}-D/{len(k)}-D/{len(v)}-D"
    if not q[0] == k[0] == v[0]:
        return "fused kernels need equal batch sizes for query, key and value"
    if call.enable_gqa and gqa:
        if same_kv_heads and k[1] != v[1]:
            return "grouped-query attention needs key and value with the same number of heads"
        if q[1] % k[1] or (not same_kv_heads and q[1] % v[1]):
            return f"grouped-query attention needs key/value heads ({k[1]}) dividing query heads ({q[1]})"
    elif not q[1] == k[1] == v[1]:
        return f"fused kernels need equal head counts (query {q[1]}, key {k[1]}, value {v[1]})"
    if q[2] == 0 or k[2] == 0:
        return "fused kernels do not run zero-length sequences"
    strides_ok = all(s == 1 for s in call.last_strides) or (ignore_singleton and q[-1] == 1)
    if not strides_ok:
        return f"fused kernels need stride 1 in the head dim (got {', '.join(map(str, call.last_strides))})"
    if mask_stride and call.mask_shape is not None and call.mask_last_stride != 1:
        return "fused CUDA kernels need the mask's last dim with stride 1"
    return None


def _mask_shape_refusal(call: Call) -> str | None:
    """`check_attn_mask_shape` (sdp_utils_cpp.h): no grad; 2-D (L|1, S|1) or 4-D (B|1, H|1, L|1, S|1)."""
    m = call.mask_shape
    if m is None:
        return None
    if call.mask_requires_grad:
        return "the attention mask requires grad"
    b, h, l, s = call.q_shape[0], call.q_shape[1], call.q_shape[2], call.k_shape[2]
    if len(m) < 2 or m[-2] not in (l, 1) or m[-1] not in (s, 1):
        return f"attention mask of shape {m} is not (L or 1, S or 1)"
    if len(m) == 2 or (len(m) == 4 and m[0] in (1, b) and m[1] in (1, h)):
        return None
    return f"attention mask of shape {m} is neither 2-D nor (B or 1, H or 1, L, S)"


def refusal(backend: str, caps: DeviceCaps, call: Call) -> str | None:
    """Why torch would not run `backend` for `call` on `caps`, or None: the `can_use_*`
    constraint lists of sdp_utils.cpp (CUDA) and sdp_utils_cpp.cpp (CPU), in their order."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown SDPA backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "math":
        return None
    dtype, d_qk, d_v = call.dtype, call.d_qk, call.d_v
    if caps.kind == "cpu":
        # use_flash_attention_cpp: no dropout, 4-D, batch/heads (GQA allowed), mask shape,
        # equal head dims, nonzero lengths, last-dim stride 1 (the mask's is not checked on CPU)
        if backend != "flash":
            return f"the {backend} backend exists only on CUDA"
        if call.dropout > 0.0:
            return "the CPU flash kernel does not run dropout"
        why = _shared_refusal(caps, call, gqa=True, same_kv_heads=True, mask_stride=False, ignore_singleton=False)
        if why is None:
            why = _mask_shape_refusal(call)
        if why is None and not (d_qk == call.k_shape[-1] == d_v):
            why = f"the CPU flash kernel needs equal head sizes (query/key {d_qk}, value {d_v})"
        if why is None and dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            why = f"the CPU flash kernel does not support {_name(dtype)}"
        return why
    cc = caps.capability
    where = f"on {caps.label}"
    if backend == "flash":
        # can_use_flash_attention: shapes, no mask, equal head dims <= 256, sm80-sm121, the
        # sm86/89/120 backward limit, causal needs L == S, fp16/bf16; then the dense checks
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
        return _shared_refusal(caps, call, gqa=True, same_kv_heads=True, mask_stride=True, ignore_singleton=True)
    if backend == "efficient":
        # can_use_mem_efficient_attention: sm50-sm121, shapes, head dims (q == k, aligned),
        # pointer alignment on sm80+, dense checks, then dtypes by architecture
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
        why = _shared_refusal(caps, call, gqa=True, same_kv_heads=True, mask_stride=True, ignore_singleton=False)
        if why:
            return why
        allowed = (torch.float16, torch.float32) + ((torch.bfloat16,) if cc >= (8, 0) else ())
        if dtype not in allowed:
            return f"memory-efficient attention {where} does not run {_name(dtype)}"
        return None
    # cudnn: can_use_cudnn_attention
    if not hasattr(torch.nn.attention.SDPBackend, "CUDNN_ATTENTION"):
        return "this torch has no cuDNN attention backend"
    if len(call.q_shape) != 4 or len(call.k_shape) != 4 or len(call.v_shape) != 4:
        return "cuDNN attention needs 4-D query/key/value"
    if dtype not in _LOW_PRECISION:
        return f"cuDNN attention runs only float16/bfloat16, not {_name(dtype)}"
    why = _mask_shape_refusal(call)
    if why:
        return why
    if not (8, 0) <= cc <= (12, 1):
        return f"cuDNN attention needs compute capability 8.0 to 12.1, not {cc[0]}.{cc[1]}"
    version = _version_tuple(caps.torch_version or torch.__version__)
    if call.dropout * 16.0 != int(call.dropout * 16.0) and version >= (2, 12):
        return "cuDNN attention needs a dropout probability that is a multiple of 1/16"
    why = _shared_refusal(caps, call, gqa=True, same_kv_heads=False, mask_stride=True, ignore_singleton=True)
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
