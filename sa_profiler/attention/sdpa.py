"""SAGAN attention through `torch.nn.functional.scaled_dot_product_attention`.

SAGAN does not scale the energy, so `scale=1.0`. Query/key have C' = C/8 channels and the
value C, so the fused kernels see one head with unequal head sizes. Layouts:

- ``single``: one head, q/k of size C', v of size C. Efficient and cuDNN accept this; flash
  does not (it needs equal head sizes).
- ``split``: the value split into C / C' heads of size C', all sharing the same q and k
  (expanded with stride 0, no copy). Same result; flash can run it. Costs no memory beyond
  `single`, but the kernel recomputes `Q^T K` once per head (slower).
- ``pad``: q and k zero-padded to C channels (zeros add nothing to `q . k`). Costs two
  B x N x C copies instead of B x N x C'; for flash it needs C <= 256.

``layout="auto"`` picks ``single``, or ``split`` (``pad`` if C is not a multiple of C') when
the chosen backend needs equal head sizes. Fused kernels need the head dim contiguous, so q,
k and v are made BNC-contiguous (a copy of each) before the call.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from sa_profiler.attention import backends
from sa_profiler.attention.base import SelfAttention2d

LAYOUTS = ("auto", "single", "split", "pad")


class BackendUnavailable(RuntimeError):
    """A forced SDPA backend cannot run this input on this device."""


def _sdp_backend(name: str) -> SDPBackend:
    return {
        "math": SDPBackend.MATH,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "flash": SDPBackend.FLASH_ATTENTION,
        "cudnn": getattr(SDPBackend, "CUDNN_ATTENTION", None),
    }[name]


class SDPASelfAttention(SelfAttention2d):
    impl_name = "sdpa"

    def __init__(self, in_dim: int, qk_channels: int | None = None, backend: str = "auto", layout: str = "auto"):
        super().__init__(in_dim, qk_channels)
        if backend != "auto" and backend not in backends.BACKENDS:
            raise ValueError(f"unknown SDPA backend {backend!r}; expected auto, {', '.join(backends.BACKENDS)}")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
        self.backend = backend
        self.layout = layout

    def options(self) -> dict:
        return {"backend": self.backend, "layout": self.layout}

    def resolve(self, dtype: torch.dtype, caps: backends.DeviceCaps, requires_grad: bool) -> tuple[str, str]:
        """(backend, layout) this layer runs with for a dtype on a device."""
        c, qk = self.in_dim, self.qk_channels
        backend = self.backend
        if backend == "auto":
            layout = "single" if self.layout == "auto" else self.layout
            d_qk, d_v = self._head_sizes(layout)
            return backends.select(caps, dtype, d_qk, d_v, requires_grad), layout
        layout = self.layout
        if layout == "auto":
            needs_equal = backends.unsupported_reason(backend, caps, dtype, qk, c, requires_grad)
            if needs_equal is not None and "equal head sizes" in needs_equal:
                layout = "split" if c % qk == 0 else "pad"
            else:
                layout = "single"
        return backend, layout

    def _head_sizes(self, layout: str) -> tuple[int, int]:
        c, qk = self.in_dim, self.qk_channels
        if layout == "split":
            if c % qk:
                raise ValueError(f"layout 'split' needs channels ({c}) divisible by qk_channels ({qk}); use 'pad'")
            return qk, qk
        if layout == "pad":
            return c, c
        return qk, c

    def forward(self, x: torch.Tensor):
        b, c, h, w = self._check_input(x)
        q, k, v = self.project(x)
        requires_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        caps = backends.caps_for(x.device)
        backend, layout = self.resolve(x.dtype, caps, requires_grad)
        q4, k4, v4 = _arrange(q, k, v, layout)
        reason = None if (self.backend == "auto" and x.device.type != "meta") else backends.unsupported_reason(
            backend, caps, x.dtype, q4.shape[-1], v4.shape[-1], requires_grad
        )
        if reason is not None:
            raise BackendUnavailable(f"SDPA backend '{backend}' cannot run this input on {caps.label}: {reason}")
        if self.backend == "auto":
            out4 = F.scaled_dot_product_attention(q4, k4, v4, scale=1.0)
        else:
            out4 = _forced_attention(backend, q4, k4, v4, caps)
        return self.residual(_merge(out4, b, c, h * w), x), None


def _arrange(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: str):
    """B x C' x N / B x C x N projections -> 4-D B x heads x N x d tensors, d contiguous."""
    b, qk, n = q.shape
    c = v.shape[1]
    qt, kt, vt = _bnc(q), _bnc(k), _bnc(v)  # B x N x C', B x N x C', B x N x C
    if layout == "split":
        heads = c // qk
        return (
            qt.unsqueeze(1).expand(b, heads, n, qk),
            kt.unsqueeze(1).expand(b, heads, n, qk),
            vt.view(b, n, heads, qk).transpose(1, 2),
        )
    if layout == "pad":
        qt = F.pad(qt, (0, c - qk))
        kt = F.pad(kt, (0, c - qk))
    return qt.unsqueeze(1), kt.unsqueeze(1), vt.unsqueeze(1)


def _bnc(t: torch.Tensor) -> torch.Tensor:
    """B x D x N -> B x N x D with stride(-1) == 1, as the fused kernels require. With D == 1
    `.contiguous()` keeps stride N on the size-1 dim; the same memory read with stride 1."""
    b, d, n = t.shape
    t = t.transpose(1, 2).contiguous()
    return t.as_strided((b, n, d), (n * d, d, 1)) if t.stride(-1) != 1 else t


def _merge(out4: torch.Tensor, b: int, c: int, n: int) -> torch.Tensor:
    """B x heads x N x d -> B x C x N."""
    return out4.transpose(1, 2).reshape(b, n, c).transpose(1, 2)


def _forced_attention(backend: str, q, k, v, caps) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch explains each refusal in a warning; we raise one line
        try:
            with sdpa_kernel(_sdp_backend(backend)):
                return F.scaled_dot_product_attention(q, k, v, scale=1.0)
        except RuntimeError as err:
            if "No available kernel" not in str(err):
                raise
            raise BackendUnavailable(
                f"SDPA backend '{backend}' refused this input on {caps.label} "
                f"(dtype {q.dtype}, q/k head size {q.shape[-1]}, value head size {v.shape[-1]})"
            ) from None
