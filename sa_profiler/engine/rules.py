"""What a CUDA kernel allocates that a dispatch mode cannot see, and layouts meta gets wrong.

A kernel that allocates a temporary inside its C++ implementation (below the dispatcher)
adds to `max_memory_allocated` but never shows up as an op output. Each rule names the op,
the condition, the bytes, and the torch source it follows (pytorch/pytorch,
aten/src/ATen/native/...), and is pinned by tests/test_rules.py against per-op measurements on
an H100 (torch 2.11, cuDNN 9.19; benchmarks/probe_cuda_ops.py, reports/validation/*probe*.csv);
the validation CSVs check the whole-step result. By how they were made:
- derived from the source: the softmax backward, `_safe_softmax`, flash attention (flash_api.cpp)
  and the memory-efficient kernels, whose kernel choice per architecture and workspace come from
  their own source (mem_eff.py) and reproduce every committed H100 row to the byte;
- measured: cuDNN attention's scratch and backward workspace. cuDNN's engines are closed
  source: these are the H100's figures, assumed on other architectures (evidence.py says so).

Besides temporaries, two more differences between a meta kernel and the CUDA kernel:
- outputs that CUDA returns on the host or not at all (`untracked_outputs`);
- output strides (`restride`): flash attention allocates its outputs with `empty_like` of the
  BSHD-transposed input, so an input that is not dense in that order (an expanded head dim)
  gets BSHD-contiguous outputs on CUDA, where the meta kernel returns BHSD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from sa_profiler.engine import mem_eff, reduce
from sa_profiler import torch_compat
from sa_profiler.engine.allocator import round_size

F32 = 4

LOW = (torch.float16, torch.bfloat16)


def _name(func) -> str:
    return func.overloadpacket.__name__


def _dt(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _round(n: int, m: int) -> int:
    return -(-n // m) * m


def is_dense(t: torch.Tensor) -> bool:
    """Non-overlapping and dense (c10 `is_non_overlapping_and_dense`), by sorting strides."""
    expected = 1
    dims = sorted(((st, s) for s, st in zip(t.shape, t.stride()) if s != 1))
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


@dataclass(frozen=True)
class Rule:
    op: str
    source: str
    temps: Callable  # (args, outputs, gpu) -> [(bytes, shape, dtype, note)]


def _copy_if_strided(t, what, op, needs):
    if needs:
        return [(_bytes(t), tuple(t.shape), _dt(t), f"contiguous copy of {what} inside {op}")]
    return []


def _softmax_backward(args, outputs, gpu):
    # native/cuda/SoftMax.cu host_softmax_backward: `grad_.contiguous()`, `output_.contiguous()`,
    # and a `grad * output` temporary of the gradient's size (measured: 2 x B x N x N on the
    # classic layer, where the incoming gradient is the transpose of a bmm output).
    grad, output = args[0], args[1]
    temps = _copy_if_strided(grad, "grad_output", "softmax backward", not grad.is_contiguous())
    temps += _copy_if_strided(output, "output", "softmax backward", not output.is_contiguous())
    temps.append((_bytes(grad), tuple(grad.shape), _dt(grad), "grad * output temporary of softmax backward"))
    return temps


def _safe_softmax(args, outputs, gpu):
    # native/SoftMax.cpp _safe_softmax: `self.eq(-inf)` (bool, like self), `.all(dim, keepdim)`
    # (bool rows) and a scalar on the device, around the softmax.
    x = args[0]
    rows = x.numel() // x.shape[-1]
    return [(x.numel(), tuple(x.shape), "bool", "fully-masked test of _safe_softmax"),
            (rows, tuple(x.shape[:-1]) + (1,), "bool", "masked rows of _safe_softmax"),
            (1, (), _dt(x), "scalar of _safe_softmax")]


def _efficient_forward(args, outputs, gpu):
    # transformers/cuda/attention.cu `_efficient_attention_forward`: `output_accum` (float32,
    # B x M x H x Kv) when the kernel chosen has `kNeedsOutputAccumulatorBuffer`: fp16/bf16 and
    # max(Dqk, Dv) > 128, which selects the 32x128 kernel with kMaxK 65536 (no single value
    # iteration; mem_eff_attention/kernel_forward.h, kernels/cutlassF.h; see mem_eff.py).
    q, v = args[0], args[2]
    b, h, m, d_qk = q.shape
    kv = v.shape[-1]
    if q.dtype not in mem_eff.DTYPES:
        return []
    kernel = mem_eff.select_forward(gpu.capability, mem_eff.DTYPES[q.dtype], d_qk, kv)
    if kernel is not None and kernel.needs_output_accum:
        return [(b * m * h * kv * F32, (b, m, h, kv), "float32", f"output_accum of {kernel.name}")]
    return []


def _efficient_backward(args, outputs, gpu):
    # transformers/cuda/attention_backward.cu `_efficient_attention_backward`, with the kernel
    # `launchKernel` picks for this card (mem_eff.py: cutlassB.h order, kMaxK, seqaligned,
    # sharedMemPerBlockOptin):
    # - `grad_out_.contiguous()` of the BMHK-transposed gradient (a copy unless dense in BMHK);
    # - `delta` float32 [B, H, M]: empty when `kKernelComputesDelta`, else
    #   `(grad_out.to(kFloat) * out.to(kFloat)).sum(-1).transpose(-2, -1).contiguous()`, whose
    #   float32 copies (fp16 on sm70 outside registers), product, sum and transposed copy (H > 1)
    #   live until the statement ends;
    # - then `workspace` = `p.workspace_size()` (kernel_backward.h), while delta is alive.
    # The peak is the copy and delta plus the larger of the two phases.
    grad_out, q, k, v = args[0], args[1], args[2], args[3]
    dropout = next((a for a in args[4:] if isinstance(a, float)), 0.0) > 0
    b, h, m, d_qk = q.shape
    n, d_v = k.shape[2], v.shape[-1]
    if q.dtype not in mem_eff.DTYPES:
        return []
    dtype = mem_eff.DTYPES[q.dtype]
    kernel = mem_eff.select_backward(gpu.capability, gpu.smem_per_block, dtype, m, n, d_qk, d_v, dropout)
    if kernel is None:
        return []  # torch raises "cutlassB: no kernel found to launch!"
    bmhk = (b, m, h, d_v)
    dense = grad_out.transpose(1, 2).is_contiguous()
    temps = _copy_if_strided(grad_out, "grad_out", "memory-efficient backward", not dense)
    delta = (b * h * m * F32, (b, h, m), "float32", "delta of memory-efficient backward")
    launcher = []
    if not kernel.computes_delta:
        if q.dtype != torch.float32:
            launcher += [(b * m * h * d_v * F32, bmhk, "float32", "grad_out.to(float) for delta"),
                         (b * m * h * d_v * F32, bmhk, "float32", "out.to(float) for delta")]
        launcher.append((b * m * h * d_v * F32, bmhk, "float32", "grad_out * out for delta"))
        if h > 1 and m > 1:
            launcher.append((b * m * h * F32, (b, m, h), "float32", "sum(-1) for delta, before its transposed copy"))
    work = mem_eff.workspace_bytes(kernel, b, h, m, n, d_qk, d_v)
    kernel_phase = [(work, (work,), "uint8", f"workspace of {kernel.name}")] if work else []
    phase = max(launcher, kernel_phase, key=lambda ts: sum(round_size(t[0]) for t in ts))
    return temps + [delta] + phase


def _flash_splits(batch_heads_mblocks: int, num_sms: int, n_blocks: int, max_splits: int = 128) -> int:
    """flash_attn/flash_api.cpp `num_splits_heuristic`."""
    if batch_heads_mblocks >= 0.8 * num_sms:
        return 1
    max_splits = min(max_splits, num_sms, n_blocks)
    eligible = [s == 1 or math.ceil(n_blocks / s) != math.ceil(n_blocks / (s - 1)) for s in range(1, max_splits + 1)]
    eff = []
    for s in range(1, max_splits + 1):
        waves = batch_heads_mblocks * s / num_sms
        eff.append(waves / math.ceil(waves) if eligible[s - 1] else 0.0)
    best = max(eff)
    for s in range(1, max_splits + 1):
        if eligible[s - 1] and eff[s - 1] >= 0.85 * best:
            return s
    return 1


def _flash_forward(args, outputs, gpu):
    # flash_attn/flash_api.cpp mha_fwd -> set_params_splitkv: with few B x H x query blocks,
    # the keys are split and partial results kept in fp32 `out_accum` [splits, B, H, Sq, Dr]
    # and `softmax_lse_accum` [splits, B, H, Sq] (Dr = D rounded up to 32, or 64 above 128).
    q, k = args[0], args[1]
    b, h, sq, d = q.shape
    sk = k.shape[2]
    block_n = 256 if d <= 64 else 128 if d <= 128 else 64
    splits = _flash_splits(b * h * math.ceil(sq / 64), 2 * gpu.sms, math.ceil(sk / block_n))
    if splits <= 1:
        return []
    dr = _round(d, 32 if d <= 128 else 64)
    return [(splits * b * h * sq * dr * F32, (splits, b, h, sq, dr), "float32", "out_accum of flash split-KV"),
            (splits * b * h * sq * F32, (splits, b, h, sq), "float32", "softmax_lse_accum of flash split-KV")]


def _flash_backward(args, outputs, gpu):
    # flash_attn/flash_api.cpp mha_bwd: `softmax_d` fp32 [B, H, round128(Sq)], `dq_accum` fp32
    # [B, round128(Sq), H, Dr]; and `_flash_attention_backward` makes grad_out and out
    # contiguous in BSHD order (transformers/cuda/attention_backward.cu).
    grad_out, q, out = args[0], args[1], args[4]
    b, h, sq, d = q.shape
    sq128 = _round(sq, 128)
    dr = _round(d, 32 if d <= 128 else 64)
    temps = _copy_if_strided(grad_out, "grad_out", "flash backward", not grad_out.transpose(1, 2).is_contiguous())
    temps += _copy_if_strided(out, "out", "flash backward", not out.transpose(1, 2).is_contiguous())
    temps.append((b * h * sq128 * F32, (b, h, sq128), "float32", "softmax_d of flash backward"))
    temps.append((b * sq128 * h * dr * F32, (b, sq128, h, dr), "float32", "dq_accum of flash backward"))
    return temps


def _cudnn_forward(args, outputs, gpu):
    # transformers/cuda/attention.cu -> cudnn/MHA.cpp: a 512-byte block for the run (measured on
    # an H100; the engines are closed source).
    return [(512, (512,), "uint8", "cuDNN attention forward scratch")]


def _cudnn_backward(args, outputs, gpu):
    # cudnn/MHA.cpp run_cudnn_SDP_bprop: grad_out copied into the output's layout when its strides
    # differ from the output's (`same_strides(o, dO)`: a BSHD grad_out beside a BSHD output, as
    # timm's and diffusers' blocks give it, is used as is; measured on an H100 in both cases),
    # and the cuDNN workspace (through the caching allocator, measured; the engine is closed
    # source): fp32 dQ accumulation B x H x Sq x Dqk, and B x H x Sq floats plus a few bytes
    # (1 to 256: a SAGAN map of 4096 tokens and a UNet's 1024 take one more 512-byte block,
    # ViT-S's 197 tokens none); 256 is taken, the safe end
    grad_out, q, out = args[0], args[1], args[4]
    b, h, sq, d = q.shape
    temps = _copy_if_strided(grad_out, "grad_out", "cuDNN attention backward", grad_out.stride() != out.stride())
    for work, what in ((b * h * sq * d * F32, "dQ accumulator"), (b * h * sq * F32 + 256, "row statistics")):
        temps.append((work, (work,), "uint8", f"cuDNN attention backward workspace ({what})"))
    return temps


def _layer_norm(index):
    # native/cuda/layer_norm_kernel.cu layer_norm_cuda / layer_norm_backward_cuda:
    # `auto X = input.expect_contiguous()`: a strided input (a transposed conv feature map before
    # nn.MultiheadAttention) is copied for the kernel. Measured on an H100: 4,194,304 B for a
    # 16 x 1024 x 64 float32 input of stride (65536, 1, 1024), forward and backward alike.
    def temps(args, outputs, gpu):
        x = args[index]
        return _copy_if_strided(x, "the input", "layer norm", not x.is_contiguous())
    return temps


def _group_norm_forward(args, outputs, gpu):
    # torch 2.14 (#186414) native_group_norm: a strided input made contiguous inside the kernel
    # (before, the composite copied it as an op of its own: routing._cuda_group_norm)
    x = args[0]
    return _copy_if_strided(x, "the input", "group norm", not x.is_contiguous())


def _group_norm_backward(args, outputs, gpu):
    # Up to torch 2.13 the backward formula (tools/autograd/derivatives.yaml, native_group_norm)
    # copies grad_out and the input contiguous before `native_group_norm_backward`, as ops the
    # tracker sees; torch 2.14 (#186414) moved those `contiguous()` calls into
    # native_group_norm_backward itself, out of the tracker's sight: the same bytes, here as
    # kernel temporaries (`torch_compat.group_norm_backward_copies_grad` tells which torch runs)
    if torch_compat.group_norm_backward_copies_grad():
        return []
    dy, x = args[0], args[1]
    temps = _copy_if_strided(dy, "grad_out", "group norm backward", not dy.is_contiguous())
    return temps + _copy_if_strided(x, "the input", "group norm backward", not x.is_contiguous())


RULES: dict[str, Rule] = {r.op: r for r in [
    Rule("_softmax_backward_data", "native/cuda/SoftMax.cu host_softmax_backward", _softmax_backward),
    Rule("_safe_softmax", "native/SoftMax.cpp _safe_softmax", _safe_softmax),
    Rule("_scaled_dot_product_efficient_attention", "transformers/cuda/attention.cu", _efficient_forward),
    Rule("_scaled_dot_product_efficient_attention_backward", "transformers/cuda/attention_backward.cu", _efficient_backward),
    Rule("_scaled_dot_product_flash_attention", "transformers/cuda/flash_attn/flash_api.cpp mha_fwd", _flash_forward),
    Rule("_scaled_dot_product_flash_attention_backward", "transformers/cuda/flash_attn/flash_api.cpp mha_bwd", _flash_backward),
    Rule("_scaled_dot_product_cudnn_attention", "native/cudnn/MHA.cpp", _cudnn_forward),
    Rule("_scaled_dot_product_cudnn_attention_backward", "native/cudnn/MHA.cpp", _cudnn_backward),
    Rule("native_layer_norm", "native/cuda/layer_norm_kernel.cu layer_norm_cuda", _layer_norm(0)),
    Rule("sum", "native/cuda/Reduce.cuh gpu_reduce_kernel (engine/reduce.py)", reduce.temps_for("sum")),
    Rule("mean", "native/cuda/Reduce.cuh gpu_reduce_kernel (engine/reduce.py)", reduce.temps_for("mean")),
    Rule("native_layer_norm_backward", "native/cuda/layer_norm_kernel.cu layer_norm_backward_cuda", _layer_norm(1)),
]}

# Copies that a torch release makes inside a kernel where an earlier release made them as ops of
# their own (the same bytes either way; routing._cuda_group_norm keeps the earlier behaviour for
# a target that has it). Apart from RULES: they are not the kernels' own workspaces, which stay
# as tests/test_rule_coverage.py's UNMODELLED says.
MOVED_COPIES = {
    "native_group_norm": _group_norm_forward,  # native/group_norm.cpp (2.14, #186414)
    "native_group_norm_backward": _group_norm_backward,
}


def _bshd_like(t: torch.Tensor) -> torch.Tensor:
    """`empty_like(t.transpose(1, 2)).transpose(1, 2)` as CUDA allocates it."""
    if is_dense(t.transpose(1, 2)):
        return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
    b, h, s, d = t.shape
    return torch.empty(b, s, h, d, dtype=t.dtype, device=t.device).transpose(1, 2)


class CudaRules:
    """The rules for one GPU target (some depend on its SM count)."""

    # every op (by name) that a method below may act on: the tracker skips the rest
    ops = frozenset(RULES) | frozenset(MOVED_COPIES) | {
        "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_backward"}

    def __init__(self, gpu):
        self.gpu = gpu

    def untracked_outputs(self, func, args, outputs) -> tuple[int, ...]:
        name = _name(func)
        if name == "_scaled_dot_product_efficient_attention":
            return (2, 3)  # philox seed/offset: CPU scalars unless capturing a CUDA graph
        if name == "_scaled_dot_product_cudnn_attention" and not torch_compat.cudnn_computes_lse(args):
            return (1,)  # no logsumexp without compute_log_sumexp: CUDA returns an undefined tensor
        return ()

    def restride(self, func, args, out):
        """Outputs with the strides CUDA gives them (flash attention), or `out` unchanged."""
        name = _name(func)
        if name == "_scaled_dot_product_flash_attention":
            return (_restrided(out[0], args[0]),) + tuple(out[1:])
        if name == "_scaled_dot_product_flash_attention_backward":
            return tuple(_restrided(o, a) for o, a in zip(out, args[1:4]))
        return out

    def transients(self, func, args, kwargs, outputs):
        name = _name(func)
        rule, moved = RULES.get(name), MOVED_COPIES.get(name)
        temps = rule.temps(args, outputs, self.gpu) if rule else []
        return temps + moved(args, outputs, self.gpu) if moved else temps


def _restrided(produced: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    target = _bshd_like(like)
    return produced if target.stride() == produced.stride() else target
