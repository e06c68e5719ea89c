"""Implementations by name, and `convert` to swap them into a model in place."""

from __future__ import annotations

import torch
from torch import nn

from sa_profiler import names
from sa_profiler.attention.base import SelfAttention2d
from sa_profiler.attention.chunked import ChunkedSelfAttention
from sa_profiler.attention.pooled import PooledSelfAttention
from sa_profiler.attention.reference import ReferenceSelfAttention
from sa_profiler.attention.sdpa import SDPASelfAttention

IMPLEMENTATIONS: dict[str, type[SelfAttention2d]] = {
    "reference": ReferenceSelfAttention,
    "sdpa": SDPASelfAttention,
    "chunked": ChunkedSelfAttention,
    "pooled": PooledSelfAttention,  # changes the model: an alternative, not a drop-in
}
assert tuple(IMPLEMENTATIONS) == names.IMPLEMENTATIONS  # the names the CLI checks before torch loads


def chunk_for(tokens: int) -> int:
    """Chunked attention's query chunk where none is given: 1024, or N/16 (rounded up to 256) for
    large maps, so a step has at most 16 chunks."""
    return max(1024, -(-tokens // 16 // 256) * 256)


def defaults(name: str, tokens: int, mode: str) -> dict:
    """The options an implementation runs with where none are given, for a map of `tokens` in
    `mode`: chunked attention's chunk (checkpointed in training, where keeping every chunk
    would cost N x N again), pooled keys/values 2x2. Options given win over these."""
    if name == "chunked":
        return {"chunk": chunk_for(tokens), "checkpoint": True} if mode == "train" else {"chunk": chunk_for(tokens)}
    if name == "pooled":
        return {"pool": 2}
    return {}


def display(name: str, options: dict) -> str:
    """An implementation as the tables name it: `sdpa (auto)`, `sdpa channels_last`,
    `chunked/1024`, `pooled 2x2`."""
    o = options
    if name == "sdpa":
        return "sdpa" + (f" {o['layout']}" if o.get("layout", "auto") != "auto" else "") + ("" if o.get("backend") else " (auto)")
    if name == "chunked":
        return f"chunked/{o.get('chunk', 1024)}"
    if name == "pooled":
        return f"pooled {o.get('pool', 2)}x{o.get('pool', 2)}"
    return name


def get(name: str) -> type[SelfAttention2d]:
    try:
        return IMPLEMENTATIONS[name]
    except KeyError:
        raise ValueError(f"unknown implementation {name!r}; expected one of {', '.join(IMPLEMENTATIONS)}") from None


def build(name: str, in_dim: int, qk_channels: int | None = None, **options) -> SelfAttention2d:
    return get(name)(in_dim, qk_channels=qk_channels, **options)


def is_sagan_attention(module: nn.Module) -> bool:
    """A SAGAN-shaped layer by structure: 1x1 query/key convs C -> C', value conv C -> C, a
    one-element `gamma` parameter. Class names do not matter."""
    q, k, v = (getattr(module, n, None) for n in ("query_conv", "key_conv", "value_conv"))
    gamma = getattr(module, "gamma", None)
    if not all(isinstance(m, nn.Conv2d) for m in (q, k, v)) or not isinstance(gamma, nn.Parameter):
        return False
    c = v.in_channels
    return (
        all(m.kernel_size == (1, 1) and m.in_channels == c and m.groups == 1 for m in (q, k, v))
        and q.out_channels == k.out_channels
        and v.out_channels == c
        and all(m.bias is not None for m in (q, k, v))
        and gamma.numel() == 1
    )


def convert(model: nn.Module, impl: str, **options) -> int:
    """Replace every SAGAN-shaped attention module inside `model` by `impl`, in place.

    Weights, device, dtype and train/eval mode are preserved. Returns how many modules were
    swapped; the model itself is never replaced (wrap it if it is the attention layer).
    """
    cls = get(impl)
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if is_sagan_attention(child)
    ]
    for parent, name, old in targets:
        with torch.device(old.gamma.device):  # a meta model stays on meta: nothing is allocated
            new = cls(old.value_conv.in_channels, qk_channels=old.query_conv.out_channels, **options)
        # in the old layer's dtype before its state is copied in, so float64 weights stay exact
        new.to(device=old.gamma.device, dtype=old.gamma.dtype)
        old_state = old.state_dict()
        state = {k: old_state[k] for k in new.state_dict()}
        # meta tensors hold no data to copy: take the old parameters themselves
        new.load_state_dict(state, assign=old.gamma.is_meta)
        new.train(old.training)
        old_params = dict(old.named_parameters())
        for n, p in new.named_parameters():
            p.requires_grad_(old_params[n].requires_grad)
        setattr(parent, name, new)
    return len(targets)
