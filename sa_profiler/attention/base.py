"""Parameters shared by every implementation: those of the classic SAGAN layer.

`query_conv` and `key_conv` project C -> C' (C' = C // 8 by default), `value_conv` C -> C,
all 1x1 convolutions, and `gamma` (initialised to zero) scales the attention output before
the residual. A `state_dict` of the classic layer therefore loads into any implementation.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def default_qk_channels(channels: int) -> int:
    qk = channels // 8
    if qk == 0:
        raise ValueError(
            f"in_dim={channels} gives query/key channels {channels} // 8 = 0; "
            "pass qk_channels=K (K >= 1) for feature maps with fewer than 8 channels"
        )
    return qk


class SelfAttention2d(nn.Module):
    """SAGAN self-attention parameters and the helpers every implementation shares."""

    impl_name = "base"
    exact = True  # computes the classic layer's output (False: changes the model)

    def __init__(self, in_dim: int, qk_channels: int | None = None):
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"in_dim must be >= 1, got {in_dim}")
        qk = default_qk_channels(in_dim) if qk_channels is None else int(qk_channels)
        if qk < 1:
            raise ValueError(f"qk_channels must be >= 1, got {qk_channels}")
        self.chanel_in = in_dim  # the classic layer's (misspelt) attribute, kept for code that reads it
        self.in_dim = in_dim
        self.qk_channels = qk
        self.query_conv = nn.Conv2d(in_dim, qk, kernel_size=1)
        self.key_conv = nn.Conv2d(in_dim, qk, kernel_size=1)
        self.value_conv = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def options(self) -> dict:
        """Constructor options beyond the shape (for `convert` and records)."""
        return {}

    def extra_repr(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options().items())
        return f"in_dim={self.in_dim}, qk_channels={self.qk_channels}{opts}"

    def _check_input(self, x: torch.Tensor) -> tuple[int, int, int, int]:
        if x.dim() != 4:
            raise ValueError(
                f"{type(self).__name__} expects a 4-D input B x C x H x W, got {x.dim()}-D shape {tuple(x.shape)}"
            )
        b, c, h, w = x.shape
        if c != self.in_dim:
            raise ValueError(
                f"{type(self).__name__} was built for {self.in_dim} channels, got input with {c} (shape {tuple(x.shape)})"
            )
        return b, c, h, w

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query B x C' x N, key B x C' x N, value B x C x N."""
        b, c, h, w = self._check_input(x)
        n = h * w
        return (
            self.query_conv(x).view(b, -1, n),
            self.key_conv(x).view(b, -1, n),
            self.value_conv(x).view(b, -1, n),
        )

    def residual(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * out.view(x.shape) + x

    @torch.no_grad()
    def attention_rows(self, x: torch.Tensor, pixels: Sequence[int] | Sequence[tuple[int, int]]) -> torch.Tensor:
        """Attention maps of chosen query pixels, B x len(pixels) x N, without the N x N matrix.

        `pixels` are flat indices into H*W or (row, col) pairs; row i of the result equals row
        `pixels[i]` of the classic layer's attention map (softmax over keys).
        """
        b, c, h, w = self._check_input(x)
        flat = []
        for p in pixels:
            if isinstance(p, (tuple, list)):
                r, col = p
                if not (0 <= r < h and 0 <= col < w):
                    raise IndexError(f"pixel {(r, col)} is outside the {h} x {w} map")
                flat.append(r * w + col)
            else:
                if not 0 <= int(p) < h * w:
                    raise IndexError(f"pixel index {p} is outside 0..{h * w - 1}")
                flat.append(int(p))
        n = h * w
        q = self.query_conv(x).view(b, -1, n)[:, :, flat]  # B x C' x P
        k = self.key_conv(x).view(b, -1, n)  # B x C' x N
        return torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)
