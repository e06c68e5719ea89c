"""Torch's optimizers on meta tensors.

`fused_on_meta`: torch's fused Adam / AdamW (`fused=True`) refuse a parameter whose device is not
in `torch.utils._foreach_utils._get_fused_kernels_supported_devices()` (torch/optim/optimizer.py
`_device_dtype_check_for_fused`, called from Adam's `_init_group` at the first step; before it,
from the constructor), and meta is not in that list, although `_fused_adam_` / `_fused_adamw_`
have meta kernels. While the context lasts the list holds "meta" too, wherever torch/optim reads
it (the name is imported into each module that checks), so the real optimizer runs its fused
path on meta tensors, allocating what the kernels allocate (nothing but their outputs) and no
foreach intermediates."""

from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def fused_on_meta():
    import torch.optim  # noqa: F401 (its modules are in sys.modules from here)
    from torch.utils import _foreach_utils

    original = _foreach_utils._get_fused_kernels_supported_devices

    def with_meta() -> list[str]:
        return [*original(), "meta"]

    patched = [m for name, m in list(sys.modules.items())
               if m is not None and (name.startswith("torch.optim") or m is _foreach_utils)
               and getattr(m, "_get_fused_kernels_supported_devices", None) is original]
    for module in patched:
        module._get_fused_kernels_supported_devices = with_meta
    try:
        yield
    finally:
        for module in patched:
            module._get_fused_kernels_supported_devices = original
