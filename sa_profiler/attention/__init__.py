"""Weight-compatible SAGAN self-attention implementations."""

from .backends import BACKENDS, DeviceCaps
from .base import SelfAttention2d
from .chunked import ChunkedSelfAttention
from .pooled import PooledSelfAttention
from .reference import ReferenceSelfAttention
from .registry import IMPLEMENTATIONS, build, convert, get, is_sagan_attention
from .sdpa import BackendUnavailable, SDPASelfAttention

__all__ = [
    "BACKENDS", "DeviceCaps", "SelfAttention2d", "ReferenceSelfAttention", "SDPASelfAttention",
    "ChunkedSelfAttention", "PooledSelfAttention", "BackendUnavailable", "IMPLEMENTATIONS", "build", "convert", "get",
    "is_sagan_attention",
]
