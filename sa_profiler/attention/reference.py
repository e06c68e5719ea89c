"""The classic SAGAN layer, as people use it: N x N energy, softmax, bmm with its transpose.

Memory: the energy `Q^T K` and its softmax are both B x N x N (N = H*W). The output pixel i
is `sum_j A[i, j] * v_j`, i.e. `V @ A^T`, hence the `permute` of the attention map.
"""

from __future__ import annotations

import torch

from sa_profiler.attention.base import SelfAttention2d


class ReferenceSelfAttention(SelfAttention2d):
    """Returns `(out, attention)` with attention B x N x N, like the original."""

    impl_name = "reference"

    def __init__(self, in_dim: int, qk_channels: int | None = None, activation=None):
        super().__init__(in_dim, qk_channels)
        self.activation = activation  # unused, as in the original
        self.softmax = torch.nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor):
        m_batchsize, C, width, height = self._check_input(x)
        proj_query = self.query_conv(x).view(m_batchsize, -1, width * height).permute(0, 2, 1)  # B x N x C'
        proj_key = self.key_conv(x).view(m_batchsize, -1, width * height)  # B x C' x N
        energy = torch.bmm(proj_query, proj_key)  # B x N x N
        attention = self.softmax(energy)  # B x N x N, rows sum to 1
        proj_value = self.value_conv(x).view(m_batchsize, -1, width * height)  # B x C x N
        out = torch.bmm(proj_value, attention.permute(0, 2, 1))  # out[:, :, i] = sum_j A[i, j] v_j
        out = out.view(m_batchsize, C, width, height)
        out = self.gamma * out + x
        return out, attention
