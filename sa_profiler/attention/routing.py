"""Every `scaled_dot_product_attention` call, on the kernel the simulated device would run.

On meta tensors torch picks the math backend for every SDPA call (`_fused_sdp_choice_meta`),
whatever the card: B x H x L x S float32 maps that no fused kernel keeps. While a simulation
runs, this torch-function mode takes each call on meta tensors, from any module (the SAGAN
layers, timm's and diffusers' attention, `nn.MultiheadAttention`, Hugging Face models), picks
the backend torch would pick on the target (`backends.select_call`, honouring
`sdpa_kernel`/`torch.backends.cuda.*_sdp_enabled`) and replays what
aten/src/ATen/native/transformers/attention.cpp `scaled_dot_product_attention` does for it:
the boolean mask converted to an additive one (`convert_boolean_attn_mask`), the
memory-efficient kernel's mask expanded and padded to 16 (`preprocess_mask`), flash's head
dim padded to 8 on CUDA (`pad_last_dim<8>`), then the backend's aten op, whose
kernel-internal allocations come from the rule table (`engine/rules.py`).

The same mode applies the AMP emulation's casts (`engine/amp.py`) when one is attached. Autograd runs
backward code with no torch-function mode on the stack, and checkpoint recomputation re-runs
forward code there. No torch release re-enters a mode of ours around the recompute (each does
something else: `torch_compat`), so `simulating` has torch's non-reentrant checkpoint
enter `reentered()` around each recompute (`torch_compat.checkpoint_scope`), the chunked
layer's own checkpoint does the same (`recompute.py`), and `fit` re-enters the mode from
module hooks for reentrant checkpoints: a checkpointed block is routed and autocast in the
backward as in the forward.
"""

from __future__ import annotations

import contextlib
import math
from types import FunctionType
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from sa_profiler import torch_compat
from sa_profiler.attention import backends
from sa_profiler.attention.memory_format import suggests_channels_last

aten = torch.ops.aten
_SDPA = torch_compat.sdpa_functions()


@dataclass(frozen=True)
class RoutedCall:
    """One SDPA call as the target would run it."""

    module: str
    backend: str
    dtype: str
    query: tuple[int, ...]
    key: tuple[int, ...]
    value: tuple[int, ...]
    mask: tuple[int, ...] | None
    is_causal: bool
    dropout: float
    requires_grad: bool


# Python functionals that call SDPA or matmuls themselves (nn.MultiheadAttention's forward)
_OPENED = {F.multi_head_attention_forward}
_CHECKS = ("has_torch_function", "has_torch_function_unary", "has_torch_function_variadic")
_UNCHECKED: dict = {}


def _unchecked(func: FunctionType) -> FunctionType:
    """`func` with its own `has_torch_function*` test answering False, so that called under the
    mode it runs its body (whose calls the mode then sees) instead of handing itself back to
    the mode. The same code object, globals with the three test names replaced."""
    hit = _UNCHECKED.get(func)
    if hit is None:
        names = set(func.__code__.co_names)
        if not names.intersection(_CHECKS):
            hit = func
        else:
            env = dict(func.__globals__)
            env.update({name: _never for name in _CHECKS})
            hit = FunctionType(func.__code__, env, func.__name__, func.__defaults__, func.__closure__)
            hit.__kwdefaults__ = func.__kwdefaults__
        _UNCHECKED[func] = hit
    return hit


def _never(*args, **kwargs) -> bool:
    return False


def enabled_backends(torch_version: str | None = None) -> tuple[str, ...]:
    """The backends torch may pick now (`sdpa_kernel` and `torch.backends.cuda.enable_*_sdp`).
    Flags all at the running torch's defaults (nothing switched, no `sdpa_kernel`) are those of
    `torch_version`, the torch the answer is for (cuDNN attention is off by default in 2.4);
    flags someone set are kept as they are."""
    cuda = torch.backends.cuda
    flags = {"flash": cuda.flash_sdp_enabled(), "efficient": cuda.mem_efficient_sdp_enabled(),
             "math": cuda.math_sdp_enabled(), "cudnn": getattr(cuda, "cudnn_sdp_enabled", lambda: False)()}
    if torch_version and flags == torch_compat.sdp_defaults(torch.__version__):
        flags = torch_compat.sdp_defaults(torch_version)
    return tuple(b for b, on in flags.items() if on)


def active_modes() -> list | None:
    """The torch-function modes on the stack now, or None where torch cannot say."""
    try:
        return torch_compat.function_mode_stack()
    except ImportError:  # pragma: no cover - a torch without the private stack accessor
        return None


@contextlib.contextmanager
def simulating(caps: backends.DeviceCaps):
    """Pretend meta tensors live on `caps`: every SDPA call on them is routed to the kernel
    that device would run (`AttentionRouting`, yielded: it logs the calls)."""
    torch_compat.prepare()  # meta kernels an older torch lacks; behaviour probes
    with backends.simulated_device(caps):
        routing = AttentionRouting(caps)
        with torch_compat.checkpoint_scope(routing.reentered), routing:
            yield routing


class AttentionRouting(TorchFunctionMode):
    """Routes SDPA calls on meta tensors to the simulated device's kernel; logs each call;
    applies an attached AMP emulation's casts."""

    def __init__(self, caps: backends.DeviceCaps, where: Callable[[], str] | None = None):
        TorchFunctionMode.__init__(self)
        self.autocast = None  # an amp.AutocastEmulation, or None
        self.caps = caps
        self.where = where or (lambda: "")
        self.calls: list[RoutedCall] = []
        self.on_call: Callable[[RoutedCall, torch.Tensor], None] | None = None
        self.explicit = None  # an explicit.Finder that sees every call's result, or None

    @contextlib.contextmanager
    def reentered(self):
        """This mode entered for forward code re-run in the backward (a checkpoint's recompute),
        unless it is on the stack already."""
        modes = active_modes()
        if modes is not None and self in modes:
            yield
            return
        with self:
            yield

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = self._call(func, args, kwargs)
        if self.explicit is not None:
            self.explicit.observe(func, args, kwargs, out)
        return out

    def _call(self, func, args, kwargs):
        if self.autocast is not None:
            out = self.autocast.half_to_float(func, args, kwargs)
            if out is not None:
                return out
            args, kwargs = self.autocast.cast(func, args, kwargs)
        if func is F.group_norm and args and args[0].device.type == "meta":
            if self.caps.kind == "cpu":
                return _cpu_group_norm(*args, **kwargs)
            return _cuda_group_norm(self.caps.torch_version or torch.__version__, *args, **kwargs)
        if func in _SDPA and args and isinstance(args[0], torch.Tensor):
            if args[0].device.type == "meta":
                out, call = self.route(*args, **kwargs)
            else:  # a real step: torch runs it; the call is logged with the backend torch picks
                out, call = func(*args, **kwargs), self.describe(*args, **kwargs)
            self.calls.append(call)
            if self.on_call is not None:
                self.on_call(call, out)
            return out
        if func in _OPENED:
            # a functional written in Python whose insides matter: the mode is off inside its
            # own handler, so its body runs with the mode re-entered, as CUDA autocast and the
            # kernel choice see each op inside it on the card
            with self:
                return _unchecked(func)(*args, **kwargs)
        return func(*args, **kwargs)

    def describe(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                 enable_gqa=False, caps=None) -> RoutedCall:
        """The call as torch's selection sees it on `caps` (this mode's device by default)."""
        call = backends.Call.of(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
        caps = caps or backends.caps_for(query.device)
        backend = backends.select_call(caps, call, enabled_backends(caps.torch_version or None))
        return RoutedCall(self.where(), backend or "none", str(query.dtype).replace("torch.", ""),
                          tuple(query.shape), tuple(key.shape), tuple(value.shape),
                          None if attn_mask is None else tuple(attn_mask.shape), bool(is_causal),
                          float(dropout_p), call.requires_grad)

    def route(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
              enable_gqa=False):
        record = self.describe(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, caps=self.caps)
        backend = record.backend
        if backend == "none":
            raise RuntimeError("No available kernel. Aborting execution.")
        if backend == "math":  # what torch runs on meta anyway: attention.cpp's math branch
            gqa = {"enable_gqa": enable_gqa} if enable_gqa or torch_compat.sdpa_takes_gqa() else {}
            return F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale=scale,
                                                  **gqa), record
        mask = _convert_boolean_mask(attn_mask, query.dtype)
        lse = record.requires_grad  # should_compute_logsumexp
        if backend == "cudnn":
            out = torch_compat.cudnn_attention(query, key, value, mask, lse, dropout_p, is_causal, scale)
        elif backend == "efficient":
            if mask is not None:
                mask = _preprocess_mask(mask, query, key)
            out = aten._scaled_dot_product_efficient_attention(query, key, value, mask, lse, dropout_p, is_causal,
                                                               scale=scale)[0]
        elif self.caps.kind == "cpu":
            out = aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, dropout_p, is_causal,
                                                                   attn_mask=mask, scale=scale)[0]
        else:  # flash on CUDA: head dim padded to a multiple of 8, the scale from the original one
            d = query.shape[-1]
            og_scale = scale if scale is not None else 1.0 / math.sqrt(d)
            q, k, v = (_pad_last_dim(t, 8) for t in (query, key, value))
            out = aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, False, scale=og_scale)[0]
            if out.shape[-1] != value.shape[-1]:
                out = out[..., : value.shape[-1]]
        return out, record


def _convert_boolean_mask(mask, dtype):
    """attention.cpp `convert_boolean_attn_mask`: True keeps, False adds -inf (a new tensor)."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.where(mask, 0.0, torch.scalar_tensor(-math.inf, dtype=dtype, device=mask.device))


def _pad_last_dim(t: torch.Tensor, alignment: int) -> torch.Tensor:
    """attention.cpp `pad_last_dim<alignment, false>`: a padded copy when not aligned."""
    d = t.shape[-1]
    if d % alignment == 0:
        return t
    return F.pad(t, (0, alignment - d % alignment))


def _preprocess_mask(mask, query, key):
    """attention.cpp `preprocess_mask`: expand to B x H x L x S; pad the last dim to 16
    (`pad_bias<16>`: a padded copy, sliced back) or make it contiguous when strides are not
    multiples of 16."""
    mask = mask.expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
    s = mask.shape[-1]
    if s % 16:
        return F.pad(mask, (0, 16 - s % 16))[..., :s]
    if any(st % 16 for st in mask.stride()[:3]):
        return mask.contiguous()
    return mask


def _cuda_group_norm(torch_version: str, input, num_groups, weight=None, bias=None, eps=1e-5):
    """`group_norm` on a CUDA target as torch `torch_version` runs it, whichever torch runs the
    simulation (`torch_compat.group_norm_backward_copies_grad`): up to 2.13 the composite makes
    the input contiguous as an op of its own, a copy the backward keeps; from 2.14 the kernels
    copy it inside (a transient: engine/rules.py `MOVED_COPIES`) and the input itself is kept."""
    if torch_compat.group_norm_copies_in(torch_version) and not torch_compat.group_norm_backward_copies_grad():
        return F.group_norm(input.contiguous(), num_groups, weight, bias, eps)
    # a 2.14 target on an older torch keeps the older composite's copy: an answer on the safe
    # side (2.14's kernel also lays its output out as the input, which an older meta kernel
    # does not reproduce)
    return F.group_norm(input, num_groups, weight, bias, eps)


def _cpu_group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """aten/src/ATen/native/group_norm.cpp `group_norm` as on a CPU tensor. A channels-last
    input stays channels-last there (`input.contiguous(input.suggest_memory_format())`), and
    the backward formula (tools/autograd/derivatives.yaml, `native_group_norm`) makes the
    gradient contiguous in the input's suggested format on the CPU up to torch 2.13
    (`torch_compat.group_norm_backward_copies_grad`); a meta tensor takes the other branch of
    both (plain `.contiguous()`: copies of channels-last tensors)."""
    if not suggests_channels_last(input):
        return F.group_norm(input, num_groups, weight, bias, eps)
    n, c = input.shape[0], input.shape[1]
    hw = math.prod(input.shape[2:])
    w = weight.contiguous() if weight is not None else None
    b = bias.contiguous() if bias is not None else None
    return _CpuGroupNorm.apply(input, w, b, n, c, hw, num_groups, eps)


class _CpuGroupNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, n, c, hw, groups, eps):
        out, mean, rstd = aten.native_group_norm(x, weight, bias, n, c, hw, groups, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.shape = (n, c, hw, groups)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, mean, rstd = ctx.saved_tensors
        n, c, hw, groups = ctx.shape
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        mask = [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1],
                ctx.needs_input_grad[2]]
        if torch_compat.group_norm_backward_copies_grad():
            grad = grad.contiguous(memory_format=fmt)
        dx, dw, db = aten.native_group_norm_backward(grad, x.contiguous(memory_format=fmt),
                                                     mean, rstd, weight, n, c, hw, groups, mask)
        return dx, dw, db, None, None, None, None, None
