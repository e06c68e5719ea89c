"""The dispatch-mode and pytree privates the engine's modes are built on, imported from one place.

Unlike the rest of the package this module imports torch when imported: its users subclass
`TorchDispatchMode` at import time. `torch.utils._python_dispatch` (`TorchDispatchMode`,
`_disable_current_modes`) and `torch.utils._pytree` (`tree_flatten`, `tree_map`) have kept
these names and signatures in every supported release (2.4 to 2.14).
"""

from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten, tree_map

disable_current_modes = _disable_current_modes  # no mode of the stack sees the ops run within

__all__ = ["TorchDispatchMode", "disable_current_modes", "tree_flatten", "tree_map"]
