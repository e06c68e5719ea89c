"""torch.utils.checkpoint around a simulated step: the recompute re-enters the simulation's
routing, and meta tensors checkpoint on torch 2.4 as on 2.5."""

from __future__ import annotations

import contextlib
import inspect


def _meta_device_module(device="cuda"):
    """torch 2.8 torch/utils/checkpoint.py `_get_device_module`: meta has no device module."""
    import torch

    if device == "meta":
        return torch.device("meta")
    return getattr(torch, device)


def checkpoint_knows_meta() -> bool:
    """Whether torch.utils.checkpoint runs on meta tensors as it is (2.5 and later; 2.4's
    `_get_device_module("meta")` reads `torch.meta`, which does not exist)."""
    import torch.utils.checkpoint as ckpt

    try:
        ckpt._get_device_module("meta")
    except AttributeError:
        return False
    return True


def fork_rng_knows_meta() -> bool:
    """Whether `torch.random.fork_rng(device_type="meta")` works (2.5 and later: it forks
    nothing for meta; 2.4 raises 'torch has no module of `meta`'), as checkpoint's recompute
    calls it."""
    import torch.random

    try:
        with torch.random.fork_rng(device_type="meta"):
            pass
    except RuntimeError:
        return False
    return True


def _meta_fork_rng(fork_rng):
    """torch 2.8 torch/random.py `fork_rng`: `if device_type == "meta": yield; return`."""
    @contextlib.contextmanager
    def fork(devices=None, enabled=True, _caller="fork_rng", _devices_kw="devices", device_type="cuda"):
        if device_type == "meta":
            yield
            return
        with fork_rng(devices, enabled, _caller, _devices_kw, device_type=device_type):
            yield
    return fork


class _Together:
    """Two context managers entered as one: the checkpoint's own recompute context, then ours.
    It holds both for as long as the checkpoint holds it, as the checkpoint would hold its own
    context alone: selective checkpointing's cache lives in its recompute context, and what the
    recompute did not consume (it stops early) stays alive until the block's backward ends
    (torch/utils/checkpoint.py: `recompute_fn` keeps `recompute_context`). A generator-based
    wrapper dropped it when the recompute ended, freeing those outputs early."""

    def __init__(self, first, second):
        self.first, self.second = first, second
        self._stack = None

    def __enter__(self):
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.first)
            stack.enter_context(self.second)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc):
        stack, self._stack = self._stack, None
        return stack.__exit__(*exc)


def _generator_name(ckpt) -> str:
    # 2.14 split the generator's body into `_checkpoint_without_reentrant_generator_impl(fn, args,
    # kwargs, *, context_fn, ...)`, which `checkpoint` calls; before, `checkpoint` called
    # `_checkpoint_without_reentrant_generator(fn, preserve, context_fn, ...)`
    impl = "_checkpoint_without_reentrant_generator_impl"
    return impl if hasattr(ckpt, impl) else "_checkpoint_without_reentrant_generator"


@contextlib.contextmanager
def checkpoint_scope(reentry):
    """While a step runs: each non-reentrant torch.utils.checkpoint recompute runs inside
    `reentry()` (a context manager that enters the simulation's routing mode when it is not on
    the stack already), through the checkpoint's own `context_fn` recompute context (beside the
    caller's own context_fn, if one was given; not with debug=True, which refuses one); and meta tensors checkpoint on torch 2.4 as on 2.5
    (`_get_device_module`, `fork_rng`).
    The module attributes are restored on exit."""
    import torch.utils.checkpoint as ckpt

    name = _generator_name(ckpt)
    original = getattr(ckpt, name)
    signature = inspect.signature(original)
    noop = ckpt.noop_context_fn

    def generator(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        debug = bound.arguments.get("debug") or getattr(ckpt, "_checkpoint_debug_enabled", None)
        if not debug:  # debug=True takes no context_fn of its own (checkpoint.py raises)
            given = bound.arguments.get("context_fn", noop)

            def context_fn():
                forward, recompute = given()
                return forward, _Together(recompute, reentry())

            bound.arguments["context_fn"] = context_fn
        return original(*bound.args, **bound.kwargs)

    import torch.random

    patches = [(ckpt, name, generator)]
    if not checkpoint_knows_meta():
        patches.append((ckpt, "_get_device_module", _meta_device_module))
    if not fork_rng_knows_meta():
        patches.append((torch.random, "fork_rng", _meta_fork_rng(torch.random.fork_rng)))
    saved = [(module, attr, getattr(module, attr)) for module, attr, _ in patches]
    for module, attr, value in patches:
        setattr(module, attr, value)
    try:
        yield
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)


def defaults_in_force() -> bool:
    """torch's checkpoint as a mirror of it may assume: early stop on, debug off (both switched
    process-wide by `set_checkpoint_early_stop`, `set_checkpoint_debug_enabled`, which set the
    private torch/utils/checkpoint.py globals `_enable_checkpoint_early_stop` and
    `_checkpoint_debug_enabled`; a torch without them has neither switch)."""
    import torch.utils.checkpoint as ckpt

    return (getattr(ckpt, "_enable_checkpoint_early_stop", None) in (None, True)
            and not getattr(ckpt, "_checkpoint_debug_enabled", None))
