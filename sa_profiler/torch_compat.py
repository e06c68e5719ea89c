"""The torch versions sa-profiler supports, and every version-dependent piece of torch it leans on.

The engine runs on torch's own machinery (meta kernels, torch-function modes, autograd's
checkpoint), and that machinery changes from release to release. What differs between the
supported releases is handled here, each difference behind one guard, detected by behaviour or
schema where it can be (so a patch release that back-ports a change is handled too) and by
version where it cannot. tests/test_torch_compat.py has a test per guard; a new torch release
that changes one of these breaks this file, visibly. (It passes 400 lines for that reason: every
guard in one place, none spread over the modules that use them.)

Guards (the torch source each follows is cited where it is applied):
- `SUPPORTED`: the releases tested (pyproject.toml keeps the floor, and no ceiling); below the
  floor the CLI refuses to start (`unsupported`), above the last it answers with a one-line
  note that the release is untested (`untested`).
- `register_fakes`: the fused SDPA forward ops and the cuDNN backward have no meta kernel before
  torch 2.5; registered from torch 2.8's torch/_meta_registrations.py where missing.
- `cudnn_attention` / `cudnn_computes_lse`: the cuDNN op's schema (2.4: no `attn_bias`, no
  `compute_log_sumexp`; 2.5 and later: both); `sdpa_takes_gqa`: `enable_gqa` (2.5 and later).
- `checkpoint_scope`: torch.utils.checkpoint's recompute re-enters no torch-function mode of
  ours in any release (2.4-2.12: none at all; 2.13: the captured device context; 2.14: a fresh
  `DeviceContext(device)`), so the simulation's routing is entered around each non-reentrant
  recompute; and before 2.5 `_get_device_module("meta")` raises (no `torch.meta`).
- `make_saved_tensor`: `torch._C._autograd._make_saved_tensor` (2.13 and later), which the
  chunked layer's checkpoint mirror needs; before it the layer takes torch's own checkpoint.
- `group_norm_backward_copies_grad` / `group_norm_copies_in`: group norm copies its strided
  operands as ops of its own up to 2.13, inside its kernels from 2.14 (#186414).
- `sdp_defaults`: the default `torch.backends.cuda.*_sdp_enabled()` flags (cuDNN opt-in in 2.4).
- `function_mode_stack`, `sequence_nr`: private accessors the engine reads.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import threading

SUPPORTED = ("2.4", "2.14")  # the first and last minor releases tested (reports/compat/)
OVERRIDE = "SA_PROFILER_ANY_TORCH"  # set to 1 to run outside the range anyway, at one's own risk


def version_tuple(version: str) -> tuple[int, int]:
    """'2.14.1+cu130' -> (2, 14)."""
    parts = version.split("+")[0].split(".")
    return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)


def installed_version() -> str | None:
    """The installed torch's version from its metadata (no import: a kept answer needs no torch)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def unsupported(version: str | None) -> str | None:
    """Why this torch cannot be used (one line), or None when it is in the supported range."""
    import os

    lo, hi = SUPPORTED
    if version is None:
        return f"torch is not installed; sa-profiler needs torch {lo} to {hi} (pip install torch)"
    if os.environ.get(OVERRIDE) == "1":
        return None
    try:
        v = version_tuple(version)
    except ValueError:
        return None  # a source build with an odd version string: let it try
    if v < version_tuple(lo):
        return (f"torch {version} is older than the supported range {lo} to {hi}; "
                f"install a newer one, e.g. pip install 'torch>={lo}', or set {OVERRIDE}=1 to try anyway")
    return None


def untested(version: str | None) -> str | None:
    """A one-line note where this torch is newer than the releases tested, or None. Such a torch
    is not refused: the guards below detect behaviour, not version numbers."""
    try:
        newer = version is not None and version_tuple(version) > version_tuple(SUPPORTED[1])
    except ValueError:
        return None
    if not newer:
        return None
    return (f"torch {version} is newer than the releases tested ({SUPPORTED[0]} to {SUPPORTED[1]}): "
            "the answers follow its behaviour as detected, untested")


def checked_torch_version(value: str | None, engine: str = "simulate") -> str | None:
    """A `--torch-version` (X.Y or X.Y.Z) within the supported range, stripped; None stays None.
    Raises ValueError (one line, with the accepted form) otherwise, and for `engine` "measure",
    which runs the installed torch."""
    import re

    if value is None:
        return None
    m = re.fullmatch(r"(\d+)\.(\d+)(\.\d+)?", str(value).strip())
    lo, hi = (version_tuple(v) for v in SUPPORTED)
    if not m or not lo <= (int(m[1]), int(m[2])) <= hi:
        raise ValueError(f"--torch-version {value!r}: expected X.Y or X.Y.Z from {lo[0]}.{lo[1]} to "
                         f"{hi[0]}.{hi[1]}, e.g. 2.6")
    if engine == "measure":
        raise ValueError("--torch-version asks about another torch, but measuring runs the installed one; "
                         "add --engine simulate")
    return str(value).strip()


def prepare() -> None:
    """Everything a simulation needs settled before its modes are entered: the missing meta
    kernels registered, and the behaviour probes run (outside any mode that would count them)."""
    register_fakes()
    group_norm_backward_copies_grad()


# ---------------------------------------------------------------------------------------------
# Meta kernels missing before torch 2.5

_registered = False
_lock = threading.Lock()
_library = None  # the torch.library.Library holding our registrations (kept alive)


def _has_meta(op) -> bool:
    import torch

    return torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "Meta")


def missing_fakes() -> list[str]:
    """The SDPA ops this torch has no meta kernel for (and that `register_fakes` supplies)."""
    import torch

    aten = torch.ops.aten
    names = ("_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_cudnn_attention_backward")
    return [n for n in names if hasattr(aten, n) and not _has_meta(getattr(aten, n).default)]


def register_fakes() -> list[str]:
    """Register meta kernels for the SDPA ops this torch lacks them for (torch 2.4), as torch 2.8's
    torch/_meta_registrations.py defines them (`meta__scaled_dot_product_efficient_attention`,
    `meta__scaled_dot_product_flash_attention`, `meta__scaled_dot_product_cudnn_attention`,
    `meta__scaled_dot_product_cudnn_backward`), on the schema this torch has. Idempotent; returns
    the ops registered by this call."""
    global _registered, _library
    with _lock:
        if _registered:
            return []
        _registered = True
        missing = missing_fakes()
        if not missing:
            return []
        import torch

        _library = torch.library.Library("aten", "IMPL")
        for name in missing:
            _library.impl(name, _FAKES[name], "Meta")
        return missing


def _empty_seed_offset():
    import torch

    # torch 2.8 `Note [Seed and Offset]`: meta scalars
    return torch.empty((), dtype=torch.long, device="meta"), torch.empty((), dtype=torch.long, device="meta")


def _fake_efficient(query, key, value, attn_bias, compute_log_sumexp, dropout_p=0.0, is_causal=False, *, scale=None):
    import torch

    q = query.transpose(1, 2)
    b, m, heads, kv = q.size(0), q.size(1), q.size(-2), value.size(-1)
    res = torch.empty(b, m, heads, kv, dtype=query.dtype, device=query.device).transpose(1, 2)
    lse_dim = math.ceil(m / 32) * 32 if compute_log_sumexp else 0
    lse = torch.empty((b, heads, lse_dim), dtype=torch.float, device=query.device)
    seed, offset = _empty_seed_offset()
    return res, lse, seed, offset


def _fake_flash(query, key, value, dropout_p=0.0, is_causal=False, return_debug_mask=False, *, scale=None):
    import torch

    b, h, sq, d = query.shape
    sk = key.size(2)
    attention = torch.empty_like(query.transpose(1, 2)).transpose(1, 2)
    lse = torch.empty((b, h, sq), dtype=torch.float, device=query.device)
    if return_debug_mask:
        block = 128 if d > 64 else 256
        mk = 128 if sk <= 128 else 256 if sk <= 256 else math.ceil(sq / block)
        debug = torch.empty((b, h, sq, mk), dtype=query.dtype, device=query.device)
    else:
        debug = torch.empty(0, dtype=query.dtype, device=query.device)
    seed, offset = _empty_seed_offset()
    return attention, lse, None, None, sq, sk, seed, offset, debug


def _fake_cudnn(query, key, value, *rest, **kwargs):
    """Either schema: (q, k, v, dropout_p, is_causal, return_debug_mask) in 2.4; (q, k, v,
    attn_bias, compute_log_sumexp, dropout_p, ...) from 2.5."""
    import torch

    b, h, sq, _ = query.shape
    res = torch.empty_like(query.transpose(1, 2)).transpose(1, 2) if value.size(-1) == query.size(-1) else \
        torch.empty(b, sq, h, value.size(-1), dtype=query.dtype, device=query.device).transpose(1, 2)
    lse = torch.empty((b, h, sq), dtype=torch.float, device=query.device)
    seed, offset = _empty_seed_offset()
    return res, lse, None, None, sq, key.size(2), seed, offset, None


def _fake_cudnn_backward(grad_out, query, key, value, *rest, **kwargs):
    import torch

    return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)


_FAKES = {
    "_scaled_dot_product_efficient_attention": _fake_efficient,
    "_scaled_dot_product_flash_attention": _fake_flash,
    "_scaled_dot_product_cudnn_attention": _fake_cudnn,
    "_scaled_dot_product_cudnn_attention_backward": _fake_cudnn_backward,
}


# ---------------------------------------------------------------------------------------------
# The cuDNN attention op's schema

@functools.lru_cache(maxsize=None)
def cudnn_takes_bias() -> bool:
    """Whether `_scaled_dot_product_cudnn_attention` takes `attn_bias` and `compute_log_sumexp`
    (torch 2.5 and later; 2.4's schema has neither)."""
    import torch

    op = getattr(torch.ops.aten, "_scaled_dot_product_cudnn_attention", None)
    return op is not None and any(a.name == "attn_bias" for a in op.default._schema.arguments)


def sdp_defaults(version: str) -> dict[str, bool]:
    """torch `version`'s default `torch.backends.cuda.*_sdp_enabled()` flags: cuDNN attention is
    opt-in in 2.4 (`cudnn_sdp_enabled()` is False there; on from 2.5)."""
    return {"flash": True, "efficient": True, "math": True, "cudnn": version_tuple(version) >= (2, 5)}


@functools.lru_cache(maxsize=None)
def sdpa_takes_gqa() -> bool:
    """Whether `scaled_dot_product_attention` takes `enable_gqa` (torch 2.5 and later)."""
    import torch

    return any(a.name == "enable_gqa" for a in torch.ops.aten.scaled_dot_product_attention.default._schema.arguments)


def cudnn_attention(query, key, value, mask, compute_lse: bool, dropout_p: float, is_causal: bool, scale):
    """The cuDNN SDPA op's output on this torch's schema (attention.cpp's cuDNN branch)."""
    import torch

    op = torch.ops.aten._scaled_dot_product_cudnn_attention
    if cudnn_takes_bias():
        return op(query, key, value, mask, compute_lse, dropout_p, is_causal, False, scale=scale)[0]
    # 2.4's schema takes no mask: a call a later torch makes with one (a simulation answering for
    # it) runs without; the mask is only read, so the call's memory is the same
    return op(query, key, value, dropout_p, is_causal, False, scale=scale)[0]


def cudnn_computes_lse(args) -> bool:
    """Whether a cuDNN forward call (its positional args) returns a logsumexp: the
    `compute_log_sumexp` argument from 2.5; always in 2.4 (its kernel always trains)."""
    return bool(args[4]) if cudnn_takes_bias() else True


# ---------------------------------------------------------------------------------------------
# autograd privates

def make_saved_tensor():
    """`torch._C._autograd._make_saved_tensor` (torch 2.13 and later), or None."""
    import torch

    return getattr(torch._C._autograd, "_make_saved_tensor", None)


def sequence_nr(node) -> int:
    """An autograd node's sequence number (grows as nodes are made; `Node._sequence_nr`, private
    but present in every supported release)."""
    return node._sequence_nr()


def function_mode_stack() -> list:
    """The torch-function modes on the stack now (innermost last)."""
    from torch.overrides import _get_current_function_mode_stack

    return list(_get_current_function_mode_stack())


# ---------------------------------------------------------------------------------------------
# torch.utils.checkpoint around a simulated step

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


@contextlib.contextmanager
def _together(first, second):
    with first, second:
        yield


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
                return forward, _together(recompute, reentry())

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


# ---------------------------------------------------------------------------------------------
# autograd formulas that changed between releases

GROUP_NORM_KERNEL_COPIES = (2, 14)  # #186414 (merged 2026-06): the copies move into the kernels


@functools.lru_cache(maxsize=None)
def group_norm_backward_copies_grad() -> bool:
    """Whether the running torch's group norm copies its operands as ops of their own: up to
    torch 2.13 the `group_norm` composite (aten/src/ATen/native/group_norm.cpp) passes
    `input.contiguous(...)` to `native_group_norm` (a copy kept for the backward) and the
    backward formula (tools/autograd/derivatives.yaml, native_group_norm) passes
    `grad_out.contiguous(...)` to `native_group_norm_backward`; torch 2.14 (#186414) passes
    both as they are and the kernels make them contiguous inside. Read off the running torch:
    group norm run once on a tiny transposed CPU tensor (the formula is the same on every
    device), counting the `clone`s before each kernel."""
    import torch
    import torch.nn.functional as F
    from torch.utils._python_dispatch import TorchDispatchMode

    from sa_profiler.engine import lazy

    class _Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    x = torch.zeros(1, 2, 2, 3).transpose(2, 3).requires_grad_()  # on the CPU: meta's kernel is a Python ref
    with lazy.outside_compile(_Ops.__torch_dispatch__), torch.enable_grad(), _Ops() as ops:
        F.group_norm(x, 1).sum().backward()
    names = ops.names
    forward = names[:names.index("native_group_norm")]
    backward = names[names.index("native_group_norm"):names.index("native_group_norm_backward")]
    return "clone" in forward and "clone" in backward


def group_norm_copies_in(version: str) -> bool:
    """Whether torch `version` (the simulated target's) copies group norm's operands as ops of
    their own (see `group_norm_backward_copies_grad`): up to 2.13."""
    return version_tuple(version) < GROUP_NORM_KERNEL_COPIES


# ---------------------------------------------------------------------------------------------
# torch.utils.flop_counter without triton

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
