"""Activation checkpointing of a model's repeated blocks, as a training script asks for it.

The repeated blocks are found structurally: from the root down, the first `nn.ModuleList` or
`nn.Sequential` on each branch with two or more children of one class that has modules and a
forward of its own, not a container (a timm ViT's `blocks`, a BERT's `encoder.layer`, each of a
ResNet's four stages); its children of such a class are the blocks, and nothing inside them is
searched. A chosen block's `forward` is
replaced on the instance by one that runs the original under
`torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`, so the state_dict's names stay as
they are. `selective` saves the matrix products' and SDPA's outputs and recomputes the rest
(torch's selective activation checkpointing). The settings' names are `names.checkpointing`'s.
"""

from __future__ import annotations

import functools
from collections import Counter

import torch
from torch import nn

from sa_profiler import names

SAVED_OPS = ("mm", "bmm", "addmm", "baddbmm")  # aten ops whose outputs `selective` keeps
SAVED_PREFIX = "_scaled_dot_product_"  # and every SDPA kernel's (aten._scaled_dot_product_*)


class BlocksError(ValueError):
    """A setting that cannot apply to this model (one line)."""


def _block(module: nn.Module) -> bool:
    """A module a block may be: one with modules of its own and a forward of its own (not a
    container: a ModuleList has no forward; a Sequential inside is searched, not wrapped)."""
    return (next(module.children(), None) is not None
            and not isinstance(module, (nn.ModuleList, nn.ModuleDict, nn.Sequential)))


def repeated_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of each repeated block, in the model's order."""
    out: list[tuple[str, nn.Module]] = []

    def search(prefix: str, module: nn.Module) -> None:
        children = list(module.named_children())
        if isinstance(module, (nn.ModuleList, nn.Sequential)):
            counts = Counter(type(c) for _, c in children if _block(c))
            repeated = {cls for cls, n in counts.items() if n >= 2}
            if repeated:
                out.extend((prefix + name, child) for name, child in children if type(child) in repeated)
                return
        for name, child in children:
            search(f"{prefix}{name}.", child)

    search("", model)
    return out


def _selective_context():
    """torch's selective-checkpoint contexts with the policy above; BlocksError on a torch
    without them."""
    import torch.utils.checkpoint as ckpt

    if not hasattr(ckpt, "create_selective_checkpoint_contexts"):
        raise BlocksError(f"--checkpointing selective needs torch {names.SELECTIVE_TORCH} or later "
                          f"(torch.utils.checkpoint.create_selective_checkpoint_contexts); this is {torch.__version__}")
    saved = {getattr(torch.ops.aten, op) for op in SAVED_OPS}

    def policy(ctx, op, *args, **kwargs):
        packet = getattr(op, "overloadpacket", op)
        if packet in saved or packet.__name__.startswith(SAVED_PREFIX):
            return ckpt.CheckpointPolicy.MUST_SAVE
        return ckpt.CheckpointPolicy.PREFER_RECOMPUTE

    return functools.partial(ckpt.create_selective_checkpoint_contexts, policy)


def _checkpointed(forward, context_fn):
    from torch.utils.checkpoint import checkpoint

    extra = {"context_fn": context_fn} if context_fn is not None else {}

    @functools.wraps(forward)
    def run(*args, **kwargs):
        return checkpoint(forward, *args, use_reentrant=False, **extra, **kwargs)

    return run


def apply(model: nn.Module, setting: str | None) -> list[str]:
    """Checkpoint `model`'s repeated blocks as `setting` says (None, "all", "every-K",
    "selective"); the names of the blocks wrapped. BlocksError: a bad setting, a model without
    repeated blocks, or `selective` on a torch without it."""
    try:
        kind, every = names.checkpointing(setting)
    except ValueError as err:
        raise BlocksError(str(err)) from None
    if kind is None:
        return []
    blocks = repeated_blocks(model)
    if not blocks:
        raise BlocksError(f"--checkpointing {setting}: {type(model).__name__} has no repeated blocks (an nn.ModuleList "
                          "or nn.Sequential with two or more blocks of one class) to checkpoint")
    context_fn = _selective_context() if kind == "selective" else None
    chosen = blocks[::every]  # the first, then every K-th after it
    for _, block in chosen:
        block.forward = _checkpointed(block.forward, context_fn)
    return [name for name, _ in chosen]
