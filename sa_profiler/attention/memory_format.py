"""c10's suggested memory format, read from a tensor's sizes and strides alone, so that it
answers the same for a meta tensor as for the CPU or CUDA tensor it stands for.

The routing mode's CPU group_norm (`attention/routing.py`) and the engine's convolution layouts
(`engine/layouts.py`) both decide by it; it lives here, below both.
"""

from __future__ import annotations

import torch


def suggests_channels_last(t: torch.Tensor) -> bool:
    """`suggest_memory_format()` is ChannelsLast (4-D) or ChannelsLast3d (5-D)."""
    return t.dim() in (4, 5) and _strides_like_cl(t)


def _strides_like_cl(t: torch.Tensor) -> bool:
    """c10/core/MemoryFormat.h `is_channels_last_strides_2d_s4` / `_3d_s5`: strides decrease in
    the order C, W, H, (D,) N, with C the fastest and no size-1 shortcut for C."""
    sizes, strides = t.shape, t.stride()
    if strides[1] == 0:
        return False
    order = (1, 3, 2, 0) if t.dim() == 4 else (1, 4, 3, 2, 0)
    min_stride = 0
    for d in order:
        if sizes[d] == 0:
            return False
        if strides[d] < min_stride:
            return False
        if d == 0 and min_stride == strides[1]:
            return False
        min_stride = strides[d]
        if sizes[d] > 1:
            min_stride *= sizes[d]
    return True
