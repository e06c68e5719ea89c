"""A diffusion UNet as diffusers writes it (diffusers 0.3x `UNet2DModel`, `ResnetBlock2D`,
`Attention` with `AttnProcessor2_0`): GroupNorm + SiLU residual blocks with a timestep
embedding, self-attention over the pixels of the lower stages (group_norm, to_q/to_k/to_v,
`F.scaled_dot_product_attention`, to_out, residual), skip connections. It takes
`(sample, timestep)`; the timestep may be a 0-dim tensor or one per sample.

    sa-profile fit examples/zoo/unet.py:unet --input 3x64x64 --input timestep=scalar:int64 --batch 8 --gpu t4
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def get_timestep_embedding(timesteps, embedding_dim, flip_sin_to_cos=True, downscale_freq_shift=0.0, max_period=10000):
    half_dim = embedding_dim // 2
    exponent = -math.log(max_period) * torch.arange(0, half_dim, dtype=torch.float32, device=timesteps.device)
    exponent = exponent / (half_dim - downscale_freq_shift)
    emb = torch.exp(exponent)
    emb = timesteps[:, None].float() * emb[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half_dim:], emb[:, :half_dim]], dim=-1)
    return emb


class TimestepEmbedding(nn.Module):
    def __init__(self, in_channels, time_embed_dim):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)

    def forward(self, sample):
        return self.linear_2(self.act(self.linear_1(sample)))


class ResnetBlock2D(nn.Module):
    def __init__(self, in_channels, out_channels, temb_channels, groups=8, output_scale_factor=1.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=1e-5, affine=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=1e-5, affine=True)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nonlinearity = nn.SiLU()
        self.output_scale_factor = output_scale_factor
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, input_tensor, temb):
        hidden_states = self.conv1(self.nonlinearity(self.norm1(input_tensor)))
        temb = self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None]
        hidden_states = hidden_states + temb
        hidden_states = self.conv2(self.dropout(self.nonlinearity(self.norm2(hidden_states))))
        if self.conv_shortcut is not None:
            input_tensor = self.conv_shortcut(input_tensor)
        return (input_tensor + hidden_states) / self.output_scale_factor


class Attention(nn.Module):
    """diffusers.models.attention_processor.Attention with AttnProcessor2_0, as UNet2DModel
    builds it (residual_connection=True, bias=True, norm_num_groups set)."""

    def __init__(self, query_dim, heads=8, dim_head=64, norm_num_groups=8, rescale_output_factor=1.0):
        super().__init__()
        inner_dim = dim_head * heads
        self.heads = heads
        self.rescale_output_factor = rescale_output_factor
        self.residual_connection = True
        self.group_norm = nn.GroupNorm(norm_num_groups, query_dim, eps=1e-5, affine=True)
        self.to_q = nn.Linear(query_dim, inner_dim, bias=True)
        self.to_k = nn.Linear(query_dim, inner_dim, bias=True)
        self.to_v = nn.Linear(query_dim, inner_dim, bias=True)
        self.to_out = nn.ModuleList([nn.Linear(inner_dim, query_dim, bias=True), nn.Dropout(0.0)])

    def forward(self, hidden_states, attention_mask=None):
        residual = hidden_states
        batch_size, channel, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        hidden_states = self.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = self.to_q(hidden_states)
        key = self.to_k(hidden_states)
        value = self.to_v(hidden_states)
        head_dim = key.shape[-1] // self.heads
        query = query.view(batch_size, -1, self.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, self.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, self.heads, head_dim).transpose(1, 2)
        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                                       is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, self.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = self.to_out[1](self.to_out[0](hidden_states))
        hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        hidden_states = hidden_states + residual
        return hidden_states / self.rescale_output_factor


class Downsample2D(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock(nn.Module):
    def __init__(self, cin, cout, temb, attention, head_dim, groups, add_downsample):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin, cout, temb, groups)])
        self.attentions = nn.ModuleList([Attention(cout, cout // head_dim, head_dim, groups)] if attention else [])
        self.downsamplers = nn.ModuleList([Downsample2D(cout)] if add_downsample else [])

    def forward(self, x, temb):
        states = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions:
                x = self.attentions[i](x)
            states.append(x)
        for down in self.downsamplers:
            x = down(x)
            states.append(x)
        return x, states


class UpBlock(nn.Module):
    def __init__(self, cin, cskip_list, cout, temb, attention, head_dim, groups, add_upsample):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D((cin if i == 0 else cout) + cs, cout, temb, groups)
                                      for i, cs in enumerate(cskip_list)])
        self.attentions = nn.ModuleList([Attention(cout, cout // head_dim, head_dim, groups) for _ in cskip_list]
                                        if attention else [])
        self.upsamplers = nn.ModuleList([Upsample2D(cout)] if add_upsample else [])

    def forward(self, x, skips, temb):
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if self.attentions:
                x = self.attentions[i](x)
        for up in self.upsamplers:
            x = up(x)
        return x


@dataclass
class UNet2DOutput:
    sample: torch.Tensor


class UNet2DModel(nn.Module):
    def __init__(self, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64), attention=(False, True, True),
                 attention_head_dim=8, norm_num_groups=8):
        super().__init__()
        ch0 = block_out_channels[0]
        temb = ch0 * 4
        self.time_channels = ch0
        self.conv_in = nn.Conv2d(in_channels, ch0, 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch0, temb)
        self.down_blocks = nn.ModuleList()
        skips = [ch0]
        cin = ch0
        for i, (cout, att) in enumerate(zip(block_out_channels, attention)):
            last = i == len(block_out_channels) - 1
            self.down_blocks.append(DownBlock(cin, cout, temb, att, attention_head_dim, norm_num_groups, not last))
            skips += [cout] * (1 if last else 2)
            cin = cout
        mid = block_out_channels[-1]
        self.mid_resnet1 = ResnetBlock2D(mid, mid, temb, norm_num_groups)
        self.mid_attention = Attention(mid, mid // attention_head_dim, attention_head_dim, norm_num_groups)
        self.mid_resnet2 = ResnetBlock2D(mid, mid, temb, norm_num_groups)
        self.up_blocks = nn.ModuleList()
        cin = mid
        for i, (cout, att) in enumerate(zip(reversed(block_out_channels), reversed(attention))):
            last = i == len(block_out_channels) - 1
            cs = [skips.pop() for _ in range(2)]
            self.up_blocks.append(UpBlock(cin, cs, cout, temb, att, attention_head_dim, norm_num_groups, not last))
            cin = cout
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, ch0, eps=1e-5)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(ch0, out_channels, 3, padding=1)

    def forward(self, sample, timestep, return_dict=True):
        timesteps = timestep
        if not torch.is_tensor(timesteps):
            timesteps = torch.tensor([timesteps], dtype=torch.long, device=sample.device)
        elif len(timesteps.shape) == 0:
            timesteps = timesteps[None].to(sample.device)
        timesteps = timesteps * torch.ones(sample.shape[0], dtype=timesteps.dtype, device=timesteps.device)
        t_emb = get_timestep_embedding(timesteps, self.time_channels).to(dtype=sample.dtype)
        emb = self.time_embedding(t_emb)
        sample = self.conv_in(sample)
        skips = [sample]
        for block in self.down_blocks:
            sample, states = block(sample, emb)
            skips += states
        sample = self.mid_resnet2(self.mid_attention(self.mid_resnet1(sample, emb)), emb)
        for block in self.up_blocks:
            sample = block(sample, skips, emb)
        sample = self.conv_out(self.conv_act(self.conv_norm_out(sample)))
        return UNet2DOutput(sample=sample) if return_dict else (sample,)


def unet(block_out_channels=(32, 64, 64), attention_head_dim=8, norm_num_groups=8):
    """Attention at the two lower stages and in the middle, heads of `attention_head_dim`."""
    return UNet2DModel(block_out_channels=tuple(block_out_channels), attention_head_dim=attention_head_dim,
                       norm_num_groups=norm_num_groups)
