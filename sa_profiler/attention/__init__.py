"""Weight-compatible SAGAN self-attention implementations."""

from sa_profiler.attention.backends import BACKENDS, DeviceCaps
from sa_profiler.attention.base import SelfAttention2d
from sa_profiler.attention.chunked import ChunkedSelfAttention
from sa_profiler.attention.pooled import PooledSelfAttention
from sa_profiler.attention.reference import ReferenceSelfAttention
from sa_profiler.attention.registry import IMPLEMENTATIONS, build, convert, get, is_sagan_attention
from sa_profiler.attention.sdpa import BackendUnavailable, SDPASelfAttention

__all__ = [
    "BACKENDS", "DeviceCaps", "SelfAttention2d", "ReferenceSelfAttention", "SDPASelfAttention",
    "ChunkedSelfAttention", "PooledSelfAttention", "BackendUnavailable", "IMPLEMENTATIONS", "build", "convert", "get",
    "is_sagan_attention",
]
