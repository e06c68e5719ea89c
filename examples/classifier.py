"""An image classifier: a small ResNet with SAGAN attention blocks after its second stage.

    sa-profile fit examples/classifier.py:resnet_attn --input 3x224x224 --batch 32 --gpu t4
    sa-profile fit examples/classifier.py:forum_cnn --input 128x256x256 --batch 1 --gpu t4
"""

import torch
from torch import nn


class SelfAttn(nn.Module):
    def __init__(self, in_dim):
        super().__init__()
        self.query_conv = nn.Conv2d(in_dim, in_dim // 8, 1)
        self.key_conv = nn.Conv2d(in_dim, in_dim // 8, 1)
        self.value_conv = nn.Conv2d(in_dim, in_dim, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.shape
        q = self.query_conv(x).view(b, -1, h * w).permute(0, 2, 1)
        k = self.key_conv(x).view(b, -1, h * w)
        attention = torch.softmax(torch.bmm(q, k), dim=-1)
        v = self.value_conv(x).view(b, -1, h * w)
        out = torch.bmm(v, attention.permute(0, 2, 1)).view(b, c, h, w)
        return self.gamma * out + x, attention


class Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        h = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(h + (x if self.down is None else self.down(x)))


class Attend(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attn = SelfAttn(c)

    def forward(self, x):
        return self.attn(x)[0]


class ResNetAttn(nn.Module):
    def __init__(self, width=64, num_classes=1000, attention_blocks=2, in_channels=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.stage1 = nn.Sequential(Basic(width, width, 1), Basic(width, width, 1))
        self.stage2 = nn.Sequential(Basic(width, 2 * width, 2), Basic(2 * width, 2 * width, 1))
        self.attention = nn.Sequential(*[Attend(2 * width) for _ in range(attention_blocks)])
        self.stage3 = nn.Sequential(Basic(2 * width, 4 * width, 2), Basic(4 * width, 4 * width, 1))
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        h = self.stage3(self.attention(self.stage2(self.stage1(self.stem(x)))))
        return self.head(h.mean(dim=(2, 3)))


def resnet_attn(width=64, num_classes=1000, attention_blocks=2):
    return ResNetAttn(int(width), int(num_classes), int(attention_blocks))


class ForumCNN(nn.Module):
    """The forum case as a model: a conv, the classic layer on 128 x 256 x 256 maps, a conv."""

    def __init__(self, channels=128):
        super().__init__()
        self.conv_in = nn.Conv2d(channels, channels, 3, padding=1)
        self.attn = SelfAttn(channels)
        self.conv_out = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv_out(torch.relu(self.attn(torch.relu(self.conv_in(x)))[0]))


def forum_cnn(channels=128):
    return ForumCNN(int(channels))
