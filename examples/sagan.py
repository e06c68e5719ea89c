"""SAGAN (Zhang et al., 2019): a generator and a discriminator with self-attention.

Attention sits at 32 x 32 and 64 x 64 feature maps for 128 x 128 images (`image_size=128`),
at the same relative depths for other sizes. `ch` scales the width: ch=64 is the paper's
size; ch=8 with image_size=32 runs a training step on a CPU in well under a second.

    sa-profile fit examples/sagan.py:Generator --input 128 --batch 64 --gpu t4 --optimizer adam
    sa-profile fit examples/sagan.py:Discriminator --input 3x128x128 --batch 64 --gpu t4
"""

import torch
from torch import nn
from torch.nn.utils import spectral_norm


class SelfAttn(nn.Module):
    """The classic SAGAN layer (bmm, softmax, bmm with the transposed map, gamma residual)."""

    def __init__(self, in_dim):
        super().__init__()
        self.query_conv = nn.Conv2d(in_dim, in_dim // 8, 1)
        self.key_conv = nn.Conv2d(in_dim, in_dim // 8, 1)
        self.value_conv = nn.Conv2d(in_dim, in_dim, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x):
        b, c, w, h = x.size()
        q = self.query_conv(x).view(b, -1, w * h).permute(0, 2, 1)
        k = self.key_conv(x).view(b, -1, w * h)
        attention = self.softmax(torch.bmm(q, k))
        v = self.value_conv(x).view(b, -1, w * h)
        out = torch.bmm(v, attention.permute(0, 2, 1)).view(b, c, w, h)
        return self.gamma * out + x, attention


class GBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1 = spectral_norm(nn.Conv2d(cin, cout, 3, padding=1))
        self.conv2 = spectral_norm(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = spectral_norm(nn.Conv2d(cin, cout, 1))

    def forward(self, x):
        h = nn.functional.interpolate(torch.relu(self.bn1(x)), scale_factor=2)
        h = self.conv2(torch.relu(self.bn2(self.conv1(h))))
        return h + self.skip(nn.functional.interpolate(x, scale_factor=2))


class DBlock(nn.Module):
    def __init__(self, cin, cout, down=True):
        super().__init__()
        self.conv1 = spectral_norm(nn.Conv2d(cin, cout, 3, padding=1))
        self.conv2 = spectral_norm(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = spectral_norm(nn.Conv2d(cin, cout, 1))
        self.down = down

    def forward(self, x):
        h = self.conv2(torch.relu(self.conv1(torch.relu(x))))
        s = self.skip(x)
        if self.down:
            h, s = nn.functional.avg_pool2d(h, 2), nn.functional.avg_pool2d(s, 2)
        return h + s


def _attention_sizes(image_size):
    return {image_size // 4, image_size // 2}  # 32 and 64 for 128 x 128 images


class Generator(nn.Module):
    def __init__(self, z_dim=128, ch=64, image_size=128):
        super().__init__()
        self.z_dim, self.ch = z_dim, ch
        self.linear = spectral_norm(nn.Linear(z_dim, 4 * 4 * 16 * ch))
        blocks, size, cin = [], 4, 16 * ch
        attn_at = _attention_sizes(image_size)
        while size < image_size:
            cout = max(ch, cin // 2)
            blocks.append(GBlock(cin, cout))
            size *= 2
            if size in attn_at:
                blocks.append(SelfAttn(cout))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), spectral_norm(nn.Conv2d(cin, 3, 3, padding=1)), nn.Tanh())

    def forward(self, z):
        h = self.linear(z).view(z.shape[0], 16 * self.ch, 4, 4)
        for block in self.blocks:
            h = block(h)
            if isinstance(h, tuple):
                h = h[0]
        return self.out(h)


class Discriminator(nn.Module):
    def __init__(self, ch=64, image_size=128):
        super().__init__()
        blocks, size, cin, cout = [], image_size, 3, ch
        attn_at = _attention_sizes(image_size)
        while size > 4:
            blocks.append(DBlock(cin, cout))
            size //= 2
            if size in attn_at:
                blocks.append(SelfAttn(cout))
            cin, cout = cout, min(cout * 2, 16 * ch)
        self.blocks = nn.ModuleList(blocks)
        self.linear = spectral_norm(nn.Linear(cin, 1))

    def forward(self, x):
        h = x
        for block in self.blocks:
            h = block(h)
            if isinstance(h, tuple):
                h = h[0]
        return self.linear(torch.relu(h).sum(dim=(2, 3)))
