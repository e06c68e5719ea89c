"""`nn.MultiheadAttention` after a CNN backbone, the way people bolt attention onto a
ResNet: conv stages, the feature map flattened to tokens, `nn.MultiheadAttention`
(batch_first), a residual and a classifier. `need_weights=False` takes torch's SDPA path
(`F.multi_head_attention_forward` calls `scaled_dot_product_attention`); the default
`need_weights=True` computes the attention map explicitly (baddbmm, softmax, bmm).

    sa-profile fit examples/zoo/mha.py:cnn_mha --input 3x128x128 --batch 16 --gpu t4
"""

from __future__ import annotations

from torch import nn


class CNNWithMHA(nn.Module):
    def __init__(self, width=64, heads=4, num_classes=10, need_weights=False, dropout=0.0):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        )
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)
        self.need_weights = need_weights

    def forward(self, x):
        f = self.backbone(x)
        tokens = f.flatten(2).transpose(1, 2)  # B, HW, C
        out, _ = self.attn(tokens, tokens, tokens, need_weights=self.need_weights)
        tokens = self.norm(tokens + out)
        return self.head(tokens.mean(dim=1))


def cnn_mha(width=64, heads=4, num_classes=10, need_weights=False):
    return CNNWithMHA(width, heads, num_classes, need_weights)
