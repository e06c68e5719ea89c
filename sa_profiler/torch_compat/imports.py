"""Imports a one-shot process can make cheaper than torch makes them."""

from __future__ import annotations


def import_flop_counter_without_triton() -> bool:
    """Import `torch.utils.flop_counter` (the time model's flop formulas) with triton hidden.

    torch/utils/flop_counter.py imports `triton.runtime.jit` only to recognise triton kernels
    (`_JITFunction`, in a try/except ImportError), and a simulation never runs one; on a CUDA
    build with triton installed that import is about 0.1 s of a one-shot answer. While
    `sys.modules["triton"]` is None, `import triton...` raises ImportError, and the warning the
    module logs then is muted. Only for a one-shot process (the CLI, `cli/common.py`): a library
    caller keeps torch's own module. Returns whether it imported the module this way; where the
    import fails with triton hidden (a torch that needs it there), nothing is left behind and
    the ordinary import happens on first use."""
    import logging
    import sys

    if "torch.utils.flop_counter" in sys.modules or "triton" in sys.modules:
        return False
    log = logging.getLogger("torch.utils.flop_counter")
    level = log.level
    sys.modules["triton"] = None
    log.setLevel(logging.ERROR)
    try:
        import torch.utils.flop_counter  # noqa: F401
    except ImportError:
        sys.modules.pop("torch.utils.flop_counter", None)
        return False
    finally:
        del sys.modules["triton"]
        log.setLevel(level)
    return True
