"""CUDA autocast, emulated for tensors that CUDA autocast would see (meta ones included).

Meta tensors have no autocast dispatch key, so the casting policy of CUDA autocast
(aten/src/ATen/autocast_mode.cpp: the `lower_precision_fp` and `fp32` lists) is applied at
the torch-function level: matmul-like ops in float16/bfloat16 (casts of leaf weights cached
while the autocast region lasts, as autocast caches them), softmax, normalisation, losses and
transcendental pointwise ops in float32.

Where the emulation is on follows torch's own autocast state: the forward runs inside a real
`torch.autocast("cpu", dtype=...)`, and the emulation casts while that state is on. Torch
saves and restores that state wherever it re-runs user code later: checkpoint recomputation
(torch/utils/checkpoint.py captures `torch.is_autocast_enabled("cpu")` in the forward and
re-enters `torch.amp.autocast("cpu", ...)` around the recompute), custom autograd functions.
So a checkpointed block recomputes in the backward in the low precision, as on the card. The
real CPU autocast changes nothing on meta tensors. The policy is applied by the simulation's
torch-function mode (`attention/routing.py`), which checkpoint re-enters for the recompute.

CPU autocast (`torch.autocast("cpu", dtype=torch.bfloat16)`, the CPU target's `--amp bf16`) has
lists of its own (autocast_mode.cpp, `TORCH_LIBRARY_IMPL(aten, AutocastCPU, m)`; which aten ops
have an AutocastCPU kernel, `torch._C._dispatch_has_kernel_for_dispatch_key(op, "AutocastCPU")`,
is the set below): its lower-precision list is the products and convolutions with
`scaled_dot_product_attention`, `prelu` and `linalg_vecdot`, and no `einsum`, `mv`, `addmv` or
`bilinear`; its float32 list holds losses, 3-d pooling, reflection / replication padding, FFTs,
linear algebra, `prod`, `cdist`, `grid_sampler` and a few more, and no softmax, normalisation or
pointwise transcendental op: those run in the dtype they are given. Its promote list is `cat`,
`stack` and `index_copy`. A measured CPU step runs torch's real CPU autocast and the emulation
casts nothing there (`emulate=False`); a simulated one applies the CPU policy (`CPU`).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from sa_profiler import torch_compat

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

LOWER_PRECISION = {
    torch.conv1d, torch.conv2d, torch.conv3d, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d,
    F.conv_transpose2d, F.conv_transpose3d, F.linear, F.bilinear, torch.matmul, torch.mm, torch.bmm, torch.addmm,
    torch.baddbmm, torch.addbmm, torch.addmv, torch.mv, torch.Tensor.matmul, torch.Tensor.mm, torch.Tensor.bmm,
    torch.Tensor.__matmul__, torch.Tensor.addmm, torch.Tensor.baddbmm, F.scaled_dot_product_attention, torch.einsum,
    F.prelu,
}
FP32 = {
    F.softmax, torch.softmax, torch.Tensor.softmax, F.log_softmax, torch.log_softmax, torch.Tensor.log_softmax,
    F.layer_norm, F.group_norm, F.cross_entropy, F.nll_loss, F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss,
    F.binary_cross_entropy_with_logits, F.kl_div, F.cosine_similarity, F.softplus, torch.exp, torch.log, torch.pow,
    torch.Tensor.exp, torch.Tensor.log, torch.Tensor.pow, torch.logsumexp, torch.cumsum, torch.cumprod, torch.rsqrt,
    torch.reciprocal, torch.expm1, torch.log1p, torch.log2, torch.log10, torch.cdist, torch.prod, torch.Tensor.rsqrt,
}
# softmax and log_softmax of a float16 input: `_softmax` / `_log_softmax` with half_to_float
_HALF = torch_compat.half_to_float_softmax()
HALF_TO_FLOAT = {F.softmax: _HALF["softmax"], torch.softmax: _HALF["softmax"], torch.Tensor.softmax: _HALF["softmax"],
                 F.log_softmax: _HALF["log_softmax"], torch.log_softmax: _HALF["log_softmax"],
                 torch.Tensor.log_softmax: _HALF["log_softmax"]}
# the `promote` list: floating arguments cast to the widest floating dtype among them
PROMOTE = {
    torch.dot, torch.Tensor.dot, torch.vdot, torch.addcdiv, torch.addcmul, torch.Tensor.addcdiv, torch.Tensor.addcmul,
    torch.atan2, torch.cross, torch.linalg.cross, torch.tensordot, torch.scatter_add, torch.index_put, torch.cat,
    torch.stack, F.grid_sample,
}


def _defined(*names):
    """The functions of `names` ("F.name", "torch.name", "torch.Tensor.name", "torch.linalg.name",
    "torch.fft.name") this torch has."""
    roots = {"F": F, "torch": torch, "torch.Tensor": torch.Tensor, "torch.linalg": torch.linalg, "torch.fft": torch.fft}
    found = set()
    for name in names:
        root, _, attr = name.rpartition(".")
        func = getattr(roots[root], attr, None)
        if func is not None:
            found.add(func)
    return found


# CPU autocast (autocast_mode.cpp, the AutocastCPU block): the Python functions whose aten op is
# on its lower_precision_fp, fp32 and promote lists
CPU_LOWER_PRECISION = {
    torch.conv1d, torch.conv2d, torch.conv3d, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
    F.conv_transpose3d, F.linear, torch.matmul, torch.mm, torch.bmm, torch.addmm, torch.baddbmm, torch.addbmm,
    torch.Tensor.matmul, torch.Tensor.mm, torch.Tensor.bmm, torch.Tensor.__matmul__, torch.Tensor.addmm,
    torch.Tensor.baddbmm, torch.Tensor.addbmm, F.scaled_dot_product_attention, F.prelu, torch.conv_tbc,
} | _defined("torch.linalg.vecdot")
CPU_FP32 = {
    F.avg_pool3d, F.max_pool3d, F.adaptive_avg_pool3d, F.adaptive_max_pool3d, F.max_unpool2d, F.max_unpool3d,
    F.fractional_max_pool2d, F.fractional_max_pool3d, F.grid_sample, F.binary_cross_entropy,
    F.binary_cross_entropy_with_logits, F.cross_entropy, F.nll_loss, F.mse_loss, F.l1_loss, F.smooth_l1_loss,
    F.huber_loss, F.kl_div, F.poisson_nll_loss, F.cosine_embedding_loss, F.hinge_embedding_loss,
    F.margin_ranking_loss, F.soft_margin_loss, F.triplet_margin_loss, F.multi_margin_loss, F.multilabel_margin_loss,
    F.ctc_loss, torch.cdist, torch.prod, torch.Tensor.prod, torch.trace, torch.Tensor.trace, torch.quantile,
    torch.nanquantile, torch.Tensor.quantile, torch.Tensor.nanquantile, torch.stft, torch.Tensor.stft, torch.polar,
    torch.view_as_complex, torch.inverse, torch.Tensor.inverse, torch.pinverse, torch.svd, torch.geqrf,
    torch.cholesky_inverse, torch.cholesky_solve, torch.triangular_solve, torch.orgqr, torch.ormqr, torch.lu_solve,
} | _defined(*(f"torch.fft.{n}" for n in ("fft", "ifft", "fft2", "ifft2", "fftn", "ifftn", "rfft", "irfft", "rfft2",
                                          "irfft2", "rfftn", "irfftn", "hfft", "ihfft")),
             *(f"torch.linalg.{n}" for n in ("cholesky", "cholesky_ex", "cond", "eig", "eigh", "eigvals", "eigvalsh",
                                             "householder_product", "inv", "inv_ex", "lstsq", "matrix_rank",
                                             "solve", "svd", "svdvals", "tensorinv", "tensorsolve")))
CPU_PROMOTE = {torch.cat, torch.stack, torch.index_copy, torch.Tensor.index_copy}
# F.pad goes through reflection_pad / replication_pad (both on the fp32 list) in these modes only
_CPU_FP32_PADS = {"reflect", "replicate"}


class AutocastEmulation:
    """An autocast policy (`policy`: "cuda", or "cpu" for CPU autocast), on while torch's CPU
    autocast state says so. `emulate=False`: the step runs on real CPU tensors under torch's own
    CPU autocast, which casts; the emulation only opens and closes the region."""

    def __init__(self, dtype: torch.dtype, policy: str = "cuda", emulate: bool = True):
        self.dtype = dtype
        self.policy = policy
        self.emulate = emulate
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id -> (original, cast)
        self._caching = False

    @contextmanager
    def region(self):
        """The forward under `torch.autocast`: casts on, weight casts cached until it ends
        (autocast clears its cache when the outermost region exits)."""
        self._caching = True
        try:
            with torch.autocast("cpu", dtype=self.dtype):
                yield
        finally:
            self._caching = False
            self.cache.clear()

    def active(self) -> bool:
        return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == self.dtype

    def _cast(self, t, dtype):
        if isinstance(t, (list, tuple)) and any(isinstance(x, torch.Tensor) for x in t):
            return type(t)(self._cast(x, dtype) for x in t)
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dtype == dtype:
            return t
        # autocast_mode.cpp `cached_cast`: float32 leaves that require grad and are not views;
        # the entry holds the original (a weak intrusive pointer there), so its key is never reused
        if (dtype != torch.float32 and self._caching and t.dtype == torch.float32 and t.is_leaf and t.requires_grad
                and torch_compat.view_base(t) is None):
            hit = self.cache.get(id(t))
            if hit is None or hit[0] is not t:
                hit = self.cache[id(t)] = (t, t.to(dtype))
            return hit[1]
        return t.to(dtype)

    def half_to_float(self, func, args, kwargs):
        """The result of a softmax / log_softmax of a float16 tensor under fp16 autocast, as CUDA
        computes it, or None for every other call. Autocast gives them `dtype=float` without
        casting the input (autocast_mode.cpp `fp32_set_opt_dtype`), and SoftMax.cpp's `softmax` /
        `log_softmax` then run `_softmax(input, dim, half_to_float=True)` for a CUDA Half input:
        no float32 copy of the input, and the backward's gradient comes out in float16
        (`_softmax_backward_data(..., input_dtype=Half)`). Measured on an H100: a SAGAN layer's
        16 x 256 x 256 map has no cast before `_softmax` in fp16, one in bf16. A meta tensor is
        not CUDA, so its softmax would take the cast: the emulation calls `_softmax` itself."""
        if (func not in HALF_TO_FLOAT or not self.emulate or self.policy != "cuda" or not self.active()
                or self.dtype != torch.float16):
            return None
        x = args[0] if args else kwargs.get("input")
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        if (not isinstance(x, torch.Tensor) or x.dtype != torch.float16 or not isinstance(dim, int)
                or kwargs.get("dtype") is not None or len(args) > 2):
            return None
        return HALF_TO_FLOAT[func](x, dim, True)

    def cast(self, func, args, kwargs):
        """The arguments `func` gets under autocast now."""
        if not self.emulate:
            return args, kwargs
        if self.active():
            if self.policy == "cpu":
                target = self._cpu_target(func, args, kwargs)
            else:
                target = self.dtype if func in LOWER_PRECISION else torch.float32 if func in FP32 else None
                if target is None and func in PROMOTE:
                    target = _widest(args, kwargs)
            if target is not None and self.policy == "cpu":
                # autocast_mode.h's wrappers cast in the call's argument list
                # (`(*F)(cached_cast(..., args, ...)...)`), which GCC evaluates right to left:
                # the last argument's copy is made first (measured on the CPU: a linear's bias,
                # then its weight, then its input)
                kwargs = dict(reversed([(k, self._cast(v, target)) for k, v in reversed(kwargs.items())]))
                args = tuple(reversed([self._cast(a, target) for a in reversed(args)]))
            elif target is not None:
                args = tuple(self._cast(a, target) for a in args)
                kwargs = {k: self._cast(v, target) for k, v in kwargs.items()}
        return args, kwargs


    def _cpu_target(self, func, args, kwargs) -> torch.dtype | None:
        """The dtype CPU autocast casts `func`'s floating arguments to, or None."""
        if func in CPU_LOWER_PRECISION:
            return self.dtype
        if func in CPU_FP32:
            return torch.float32
        if func is F.pad and (kwargs.get("mode", args[2] if len(args) > 2 else "constant")) in _CPU_FP32_PADS:
            return torch.float32
        if func in CPU_PROMOTE:
            return _widest(args, kwargs)
        return None


def _widest(args, kwargs) -> torch.dtype | None:
    """The widest floating dtype among the tensors in the arguments (lists included)."""
    found = []

    def visit(x):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            found.append(x.dtype)
        elif isinstance(x, (list, tuple)):
            for item in x:
                visit(item)

    visit(list(args) + list(kwargs.values()))
    if len(set(found)) < 2:
        return None
    return max(found, key=lambda d: (torch.finfo(d).bits, d == torch.float32))
