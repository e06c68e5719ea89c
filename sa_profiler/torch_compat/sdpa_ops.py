"""torch's SDPA ops across releases: the meta kernels missing before torch 2.5, the cuDNN op's
schema, `enable_gqa`, the default backend flags, and the private names the ops go by."""

from __future__ import annotations

import functools
import math
import threading

from sa_profiler.torch_compat.versions import version_tuple

# ---------------------------------------------------------------------------------------------
# Meta kernels missing before torch 2.5

_registered = False
_lock = threading.Lock()
_library = None  # the torch.library.Library holding our registrations (kept alive)


def _has_meta(op) -> bool:
    import torch

    return torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "Meta")


def missing_fakes() -> list[str]:
    """The SDPA ops (and the fused AdamW update) this torch has no meta kernel for, and that
    `register_fakes` supplies."""
    import torch

    aten = torch.ops.aten
    return [n for n in _FAKES if hasattr(aten, n) and not _has_meta(getattr(aten, n).default)]


def register_fakes() -> list[str]:
    """Register meta kernels for the SDPA ops this torch lacks them for (torch 2.4), as torch 2.8's
    torch/_meta_registrations.py defines them (`meta__scaled_dot_product_efficient_attention`,
    `meta__scaled_dot_product_flash_attention`, `meta__scaled_dot_product_cudnn_attention`,
    `meta__scaled_dot_product_cudnn_backward`), on the schema this torch has. Idempotent; returns
    the ops registered by this call."""
    global _registered, _library
    with _lock:
        if _registered:
            return []
        _registered = True
        missing = missing_fakes()
        if not missing:
            return []
        import torch

        _library = torch.library.Library("aten", "IMPL")
        for name in missing:
            _library.impl(name, _FAKES[name], "Meta")
        return missing


def _empty_seed_offset():
    import torch

    # torch 2.8 `Note [Seed and Offset]`: meta scalars
    return torch.empty((), dtype=torch.long, device="meta"), torch.empty((), dtype=torch.long, device="meta")


def _fake_efficient(query, key, value, attn_bias, compute_log_sumexp, dropout_p=0.0, is_causal=False, *, scale=None):
    import torch

    q = query.transpose(1, 2)
    b, m, heads, kv = q.size(0), q.size(1), q.size(-2), value.size(-1)
    res = torch.empty(b, m, heads, kv, dtype=query.dtype, device=query.device).transpose(1, 2)
    lse_dim = math.ceil(m / 32) * 32 if compute_log_sumexp else 0
    lse = torch.empty((b, heads, lse_dim), dtype=torch.float, device=query.device)
    seed, offset = _empty_seed_offset()
    return res, lse, seed, offset


def _fake_flash(query, key, value, dropout_p=0.0, is_causal=False, return_debug_mask=False, *, scale=None):
    import torch

    b, h, sq, d = query.shape
    sk = key.size(2)
    attention = torch.empty_like(query.transpose(1, 2)).transpose(1, 2)
    lse = torch.empty((b, h, sq), dtype=torch.float, device=query.device)
    if return_debug_mask:
        block = 128 if d > 64 else 256
        mk = 128 if sk <= 128 else 256 if sk <= 256 else math.ceil(sq / block)
        debug = torch.empty((b, h, sq, mk), dtype=query.dtype, device=query.device)
    else:
        debug = torch.empty(0, dtype=query.dtype, device=query.device)
    seed, offset = _empty_seed_offset()
    return attention, lse, None, None, sq, sk, seed, offset, debug


def _fake_cudnn(query, key, value, *rest, **kwargs):
    """Either schema: (q, k, v, dropout_p, is_causal, return_debug_mask) in 2.4; (q, k, v,
    attn_bias, compute_log_sumexp, dropout_p, ...) from 2.5."""
    import torch

    b, h, sq, _ = query.shape
    res = torch.empty_like(query.transpose(1, 2)).transpose(1, 2) if value.size(-1) == query.size(-1) else \
        torch.empty(b, sq, h, value.size(-1), dtype=query.dtype, device=query.device).transpose(1, 2)
    lse = torch.empty((b, h, sq), dtype=torch.float, device=query.device)
    seed, offset = _empty_seed_offset()
    return res, lse, None, None, sq, key.size(2), seed, offset, None


def _fake_cudnn_backward(grad_out, query, key, value, *rest, **kwargs):
    import torch

    return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)


def _fake_fused_adamw(*args, **kwargs):
    """`_fused_adamw_` updates its tensor lists in place and returns nothing (torch 2.4 has a
    meta kernel for `_fused_adam_` and none for it; 2.8 has both): on meta, nothing to do."""
    return None


_FAKES = {
    "_scaled_dot_product_efficient_attention": _fake_efficient,
    "_scaled_dot_product_flash_attention": _fake_flash,
    "_scaled_dot_product_cudnn_attention": _fake_cudnn,
    "_scaled_dot_product_cudnn_attention_backward": _fake_cudnn_backward,
    "_fused_adamw_": _fake_fused_adamw,
}


# ---------------------------------------------------------------------------------------------
# The cuDNN attention op's schema

@functools.lru_cache(maxsize=None)
def cudnn_takes_bias() -> bool:
    """Whether `_scaled_dot_product_cudnn_attention` takes `attn_bias` and `compute_log_sumexp`
    (torch 2.5 and later; 2.4's schema has neither)."""
    import torch

    op = getattr(torch.ops.aten, "_scaled_dot_product_cudnn_attention", None)
    return op is not None and any(a.name == "attn_bias" for a in op.default._schema.arguments)


def sdp_defaults(version: str) -> dict[str, bool]:
    """torch `version`'s default `torch.backends.cuda.*_sdp_enabled()` flags: cuDNN attention is
    opt-in in 2.4 (`cudnn_sdp_enabled()` is False there; on from 2.5)."""
    return {"flash": True, "efficient": True, "math": True, "cudnn": version_tuple(version) >= (2, 5)}


@functools.lru_cache(maxsize=None)
def sdpa_takes_gqa() -> bool:
    """Whether `scaled_dot_product_attention` takes `enable_gqa` (torch 2.5 and later)."""
    import torch

    return any(a.name == "enable_gqa" for a in torch.ops.aten.scaled_dot_product_attention.default._schema.arguments)


def cudnn_attention(query, key, value, mask, compute_lse: bool, dropout_p: float, is_causal: bool, scale):
    """The cuDNN SDPA op's output on this torch's schema (attention.cpp's cuDNN branch)."""
    import torch

    op = torch.ops.aten._scaled_dot_product_cudnn_attention
    if cudnn_takes_bias():
        return op(query, key, value, mask, compute_lse, dropout_p, is_causal, False, scale=scale)[0]
    # 2.4's schema takes no mask: a call a later torch makes with one (a simulation answering for
    # it) runs without; the mask is only read, so the call's memory is the same
    return op(query, key, value, dropout_p, is_causal, False, scale=scale)[0]


def cudnn_computes_lse(args) -> bool:
    """Whether a cuDNN forward call (its positional args) returns a logsumexp: the
    `compute_log_sumexp` argument from 2.5; always in 2.4 (its kernel always trains)."""
    return bool(args[4]) if cudnn_takes_bias() else True


def sdpa_functions() -> set:
    """The callables a torch-function mode sees for SDPA: `F.scaled_dot_product_attention` and the
    C binding it is made from (torch/nn/functional.py: `_add_docstr(torch._C._nn.
    scaled_dot_product_attention, ...)`, the same object in every supported release; a torch
    without the binding leaves the public one)."""
    import torch
    import torch.nn.functional as F

    binding = getattr(getattr(torch._C, "_nn", None), "scaled_dot_product_attention", None)
    return {F.scaled_dot_product_attention} | ({binding} if binding is not None else set())


def op_schema(op):
    """An `OpOverload`'s schema (`OpOverload._schema`, torch/_ops.py: a `torch._C.FunctionSchema`
    with `arguments`, each with `name` and `alias_info`, in every supported release)."""
    return op._schema
