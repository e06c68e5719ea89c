"""Keys and values max-pooled before attention, as in BigGAN's attention block.

This changes the model (each query attends to pooled neighbourhoods), so it is offered as an
alternative with its own numbers, never as a silent substitute. Parameters are the classic
layer's, so a classic `state_dict` loads; outputs differ from the classic layer by design.
Memory: the attention matrix is N x N / pool^2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sa_profiler.attention.base import SelfAttention2d


class PooledSelfAttention(SelfAttention2d):
    impl_name = "pooled"
    exact = False

    def __init__(self, in_dim: int, qk_channels: int | None = None, pool: int = 2):
        super().__init__(in_dim, qk_channels)
        if int(pool) < 1:
            raise ValueError(f"pool must be >= 1, got {pool}")
        self.pool = int(pool)

    def options(self) -> dict:
        return {"pool": self.pool}

    def forward(self, x: torch.Tensor):
        b, c, h, w = self._check_input(x)
        if h % self.pool or w % self.pool:
            raise ValueError(f"pooled attention needs H and W divisible by pool={self.pool}, got {h} x {w}")
        n = h * w
        q = self.query_conv(x).view(b, -1, n).transpose(1, 2)  # B x N x C'
        k = F.max_pool2d(self.key_conv(x), self.pool).view(b, self.qk_channels, -1)  # B x C' x N/p^2
        v = F.max_pool2d(self.value_conv(x), self.pool).view(b, c, -1)  # B x C x N/p^2
        attention = torch.softmax(torch.bmm(q, k), dim=-1)  # B x N x N/p^2
        out = torch.bmm(v, attention.transpose(1, 2))  # B x C x N
        return self.residual(out, x), None
