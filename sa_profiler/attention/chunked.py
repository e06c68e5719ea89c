"""Queries in chunks: each chunk's softmax is exact, the live attention block is chunk x N.

Forward memory drops from B x N x N to B x chunk x N (twice: energy and softmax). In
training, autograd keeps every chunk's softmax for the backward (B x N x N in total again)
unless `checkpoint=True`, which recomputes each chunk in the backward
(`torch.utils.checkpoint`, non-reentrant) so only one chunk's block is alive at a time. On
meta tensors (a simulated step) the same checkpoint runs without importing torch._dynamo
(`recompute.py`: the same ops and memory, byte for byte).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from sa_profiler.attention import recompute as _recompute
from sa_profiler.attention.base import SelfAttention2d


def _chunk_attention(q_chunk: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q_chunk B x n x C', k B x C' x N, v B x C x N -> B x C x n."""
    attention = torch.softmax(torch.bmm(q_chunk, k), dim=-1)  # B x n x N
    return torch.bmm(v, attention.transpose(1, 2))


class ChunkedSelfAttention(SelfAttention2d):
    impl_name = "chunked"

    def __init__(self, in_dim: int, qk_channels: int | None = None, chunk: int = 1024, checkpoint: bool = False):
        super().__init__(in_dim, qk_channels)
        if int(chunk) < 1:
            raise ValueError(f"chunk must be >= 1 query pixels, got {chunk}")
        self.chunk = int(chunk)
        self.checkpoint = bool(checkpoint)

    def options(self) -> dict:
        return {"chunk": self.chunk, "checkpoint": self.checkpoint}

    def forward(self, x: torch.Tensor):
        b, c, h, w = self._check_input(x)
        q, k, v = self.project(x)
        q = q.transpose(1, 2)  # B x N x C' (a view; bmm reads it transposed, no copy)
        n = h * w
        recompute = self.checkpoint and torch.is_grad_enabled()
        parts = []
        for start in range(0, n, self.chunk):
            q_chunk = q[:, start : start + self.chunk]
            if recompute and _recompute.usable(q_chunk, k, v):
                parts.append(_recompute.checkpoint(_chunk_attention, q_chunk, k, v))
            elif recompute:
                parts.append(_checkpoint(_chunk_attention, q_chunk, k, v, use_reentrant=False))
            else:
                parts.append(_chunk_attention(q_chunk, k, v))
        out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
        return self.residual(out, x), None
