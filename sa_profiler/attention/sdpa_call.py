"""One `scaled_dot_product_attention` call as torch's backend selection reads it, and the checks
on it that every fused kernel makes alike, on any device and torch release (sdp_utils_cpp.h).
The per-backend checks and the version-dependent rules are in backends.py."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


def shared_refusal(call: Call, *, gqa: bool, same_kv_heads: bool, mask_stride: bool,
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


def mask_shape_refusal(call: Call) -> str | None:
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
