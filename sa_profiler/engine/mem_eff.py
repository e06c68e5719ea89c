"""The memory-efficient attention kernels (CUTLASS, from xformers) as torch builds and launches them.

Sources (pytorch/pytorch, aten/src/ATen/native/transformers/cuda/):
- mem_eff_attention/kernels/generate_kernels.py `BwdKernel.get_all` / `FwdKernel.get_all`:
  the kernels compiled into cutlassB.h / cutlassF.h, per architecture range (`SM = [50, 70,
  75, 80, 100]`: sm60 runs the sm50 kernels, sm86/sm89/sm90 the sm80 ones) and the order
  `dispatch_cutlassB_<dtype>_sm<arch>` tries them in (`sort_index`).
- attention_backward.cu `_efficient_attention_backward` (`launchKernel`): the first kernel with
  `kMaxK >= max(Dqk, Dv)`, dropout if needed, sequence lengths divisible by the block sizes for
  the "seqaligned" variants, strides divisible by `kMinimumAlignment`, and
  `sizeof(SharedStorage) <= sharedMemPerBlockOptin`; then `delta`, the split-keys heuristic and
  `p.workspace_size()`.
- mem_eff_attention/kernel_backward.h `AttentionBackwardKernel`: `kOutputInRF`,
  `kKernelComputesDelta`, `kEnableSplitKeys`, `kNeedsAccumGrad{Q,K,V}`, `GradQTempStorage`,
  `Params::workspace_size()`, `SharedStorage{Prologue,NoPrologue}`.
- mem_eff_attention/gemm_kernel_utils.h `DefaultGemmType`: tensor cores (ThreadK 32) for
  fp16/bf16 from sm75 and fp32 from sm80 (TF32), `kMinimumAlignment` 4, or 2 for fp16 on sm70;
  otherwise SIMT (ThreadK 8, alignment 1).

The "notaligned" kernels are listed by the generator but never launched through SDPA: the
launcher tests only `kMinimumAlignment`, which the aligned kernel of the same shape shares.

Versions: the dK/dV staging is `num_splits_key x BJ x align_up(D, BI)` since xformers#1028
reached torch in #127090 (May 2024, before 2.4; it had been `align_up(num_keys, BJ)` rows per
split), so one formula serves 2.4 to 2.14. Not modelled: deterministic mode (one key split),
sliding windows and cu_seqlens (no SDPA call reaches them).

Shared memory: `sizeof(SharedStorage)` is not printed anywhere in the source, so `smem_bytes`
adds up the tiles of the largest phase of the kernel's SharedStorage union (operand tiles of
its CUTLASS mainloops with their stage count, the attention tiles kept between matmuls) and
leaves out layout padding and epilogue scratch: a lower bound. The only decisions it changes on
the catalogue's cards are on sm86/sm89 (99 KiB): the 128x128 fp16 kernel (>= 128.5 KiB) and the
128x64 fp32 kernels (>= 104.5 KiB) do not fit, so those cards run 64x64 tiles. This agrees with
the generator's own comments ("we still need fallback to 64 for GPUs with less shmem (Sm75,
Sm86 ...)"; the k96 kernel "is the only kernel that can keep the outputs on RF on Sm86/Sm89")
and with xformers#517 (fp32 K=80 backward did not fit Sm86 before the 64x64 fallback). Every
other kernel's bound is at least 10 KiB under its card's limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

DTYPES = {torch.float16: "f16", torch.bfloat16: "bf16", torch.float32: "f32"}
SM_RANGES = ((50, 70), (70, 75), (75, 80), (80, 100))
F32 = 4


def _ceil(n: int, m: int) -> int:
    return -(-n // m)


def _align(n: int, m: int) -> int:
    return _ceil(n, m) * m


def arch_of(capability: tuple[int, int]) -> int:
    """The kernels' architecture tag for a device: `dispatch_cutlassB` runs the range with
    `sm <= cc < sm_max`; newer cards than sm100 are treated as sm80 (not in the catalogue)."""
    cc = capability[0] * 10 + capability[1]
    for lo, hi in SM_RANGES:
        if lo <= cc < hi:
            return lo
    if cc >= 100:
        return 80
    raise ValueError(f"memory-efficient attention needs compute capability 5.0, not {capability}")


@dataclass(frozen=True)
class GemmType:
    """gemm_kernel_utils.h `DefaultGemmType<ArchTag, scalar_t>`."""

    tensor_cores: bool
    thread_k: int
    min_alignment: int
    stages: int  # DefaultGemmConfiguration::kStages: 3 multistage (sm80), 2 pipelined


def gemm_type(arch: int, dtype: str) -> GemmType:
    if dtype == "f32" and arch >= 80:
        return GemmType(True, 32, 4, 3)
    if dtype in ("f16", "bf16") and arch >= 75:
        return GemmType(True, 32, 4, 3 if arch >= 80 else 2)
    if dtype == "f16" and arch == 70:
        return GemmType(True, 32, 2, 2)
    return GemmType(False, 8, 1, 2)


@dataclass(frozen=True)
class BwdKernel:
    """One `AttentionBackwardKernel<Arch, scalar_t, aligned, dropout, preload, BI, BJ, kMaxK, seqaligned>`."""

    arch: int
    dtype: str  # f16 / bf16 / f32
    block_i: int  # queries per block
    block_j: int  # keys per block
    max_k: int
    preload: bool
    dropout: bool = False
    seqaligned: bool = False
    only_on: tuple[int, ...] = ()  # `dispatch_cond`: compute capabilities it is restricted to

    @property
    def name(self) -> str:
        drop = "_dropout" if self.dropout else ""
        seq = "_seqaligned" if self.seqaligned else ""
        return f"fmha_cutlassB_{self.dtype}_aligned_{self.block_i}x{self.block_j}_k{self.max_k}{drop}{seq}_sm{self.arch}"

    @property
    def is_half(self) -> bool:
        return self.dtype != "f32"

    @property
    def output_in_rf(self) -> bool:
        """`kOutputInRF = kIsHalf && kMaxK <= kBlockSizeI`: dK/dV accumulate in registers."""
        return self.is_half and self.max_k <= self.block_i

    @property
    def split_keys(self) -> bool:
        """`kEnableSplitKeys = kMinSm >= 70`."""
        return self.arch >= 70

    @property
    def accum_grad_q(self) -> bool:
        """`kNeedsAccumGradQ = kEnableSplitKeys || output_t != float`."""
        return self.split_keys or self.is_half

    @property
    def accum_grad_kv(self) -> bool:
        """`kNeedsAccumGradK/V = !kOutputInRF && output_t != float`."""
        return not self.output_in_rf and self.is_half

    @property
    def computes_delta(self) -> bool:
        """`kKernelComputesDelta = kIsHalf && (kOutputInRF || kMinComputeCapability != 70)`;
        otherwise the launcher computes it from float32 copies."""
        return self.is_half and (self.output_in_rf or self.arch != 70)

    @property
    def sort_index(self) -> tuple:
        """generate_kernels.py `BwdKernel.sort_index` (aligned first, then no dropout, smallest
        kMaxK, largest block_i, seqaligned first)."""
        return (1 if self.dropout else 0, self.max_k, -self.block_i, 0 if self.seqaligned else 1)

    @property
    def smem_bytes(self) -> int:
        """A lower bound of `sizeof(SharedStorage)` (see the module docstring)."""
        g = gemm_type(self.arch, self.dtype)
        e = 2 if self.is_half else 4
        bi, bj, kt = self.block_i, self.block_j, g.thread_k

        def stages(k: int) -> int:  # MakeCustomMma caps the stages at ceil(kMaxK / ThreadK)
            return min(g.stages, _ceil(k, kt)) if g.stages > 2 else g.stages

        s_qk = stages(self.max_k)
        attn = bi * bj * e  # MatmulQK / MatmulDOIVJ AccumulatorSharedStorage
        zij = attn if self.dropout else 0
        qk_a, qk_b = bj * kt * s_qk * e, kt * s_qk * bi * e  # k_j and q_i tiles
        doivj = bi * kt * s_qk * e + kt * s_qk * bj * e
        grad_v_b = kt * stages(bi) * bi * e
        grad_q_b = kt * stages(bj) * bj * e
        grad_k_b = kt * stages(bi) * bi * e
        di = bi * F32
        if self.preload:  # SharedStoragePrologue
            persistent = di + qk_a
            phases = [attn + zij + grad_v_b + doivj, attn + grad_k_b + grad_q_b]
        else:  # SharedStorageNoPrologue
            persistent = di
            phases = [qk_a + qk_b, attn + zij + grad_v_b, attn + doivj,
                      2 * attn + grad_q_b, 2 * attn + grad_k_b]
        return persistent + max(phases)


@lru_cache(maxsize=None)
def backward_kernels(arch: int, dtype: str) -> tuple[BwdKernel, ...]:
    """`dispatch_cutlassB_<dtype>_sm<arch>`, aligned kernels, in dispatch order
    (generate_kernels.py `BwdKernel.get_all`, sorted)."""
    if dtype == "bf16" and arch < 80:
        return ()
    out = []
    for dropout in (False, True):
        for max_k in (32, 64, 128, 2**16):
            half = dtype != "f32"
            blocks = [64]
            if (arch >= 80 or (arch >= 70 and half)) and max_k > 64:
                blocks.append(128)
            for bi in blocks:
                in_rf = half and max_k <= bi
                preload = half and arch >= 80 and in_rf
                bj = 128 if (preload and max_k > 64) else 64
                out.append(BwdKernel(arch, dtype, bi, bj, max_k, preload, dropout))
                if not dropout and max_k <= 128 and half and arch in (70, 80):
                    out.append(BwdKernel(arch, dtype, bi, bj, max_k, preload, dropout, seqaligned=True))
    if arch == 80 and dtype != "f32":  # the stable-diffusion K=80 kernel
        out.append(BwdKernel(80, dtype, 128, 64, 96, True, only_on=(86, 89)))
    return tuple(sorted(out, key=lambda k: k.sort_index))


@dataclass(frozen=True)
class Choice:
    kernel: BwdKernel
    num_splits_key: int
    workspace_bytes: int


def select_backward(capability: tuple[int, int], smem_optin: int, dtype: str, m: int, n: int, d_qk: int, d_v: int,
                    dropout: bool = False, strides=()) -> BwdKernel | None:
    """The kernel `launchKernel` launches (None: "cutlassB: no kernel found to launch!")."""
    arch = arch_of(capability)
    cc = capability[0] * 10 + capability[1]
    max_k = max(d_qk, d_v)
    for k in backward_kernels(arch, dtype):
        if k.only_on and cc not in k.only_on:
            continue
        if k.max_k < max_k or (dropout and not k.dropout):
            continue
        if k.seqaligned and (m % k.block_i or n % k.block_j):
            continue
        if any(s % gemm_type(arch, dtype).min_alignment for s in strides):
            continue
        if k.smem_bytes > smem_optin:
            continue
        return k
    return None


def num_splits_key(k: BwdKernel, batch: int, heads: int, n: int) -> int:
    """attention_backward.cu: `ceil(num_keys / kBlockSizeJ)`; 1 if the grid already has 256
    blocks and there are at most two key blocks; at most 200 / (B x H) when dK/dV go through
    the workspace; 1 without split keys (sm50) or when that leaves less than 1."""
    splits = _ceil(n, k.block_j)
    if batch * heads >= 256 and n <= 2 * k.block_j:
        splits = 1
    if k.accum_grad_kv:
        splits = min(splits, 200 // (batch * heads))
    if not k.split_keys or splits < 1:
        splits = 1
    return splits


def workspace_bytes(k: BwdKernel, batch: int, heads: int, m: int, n: int, d_qk: int, d_v: int) -> int:
    """kernel_backward.h `Params::workspace_size()`: per (batch, head), the dK and dV staging
    (`num_splits_key x BJ x align_up(D, BI)` floats each, when `kNeedsAccumGradK/V`) and the dQ
    tiles (`ceil(M / BI) x ceil(Dqk / BJ)` `GradQTempStorage`s of 16 bytes + BI x BJ floats,
    when `kNeedsAccumGradQ`), aligned to 4 floats."""
    splits = num_splits_key(k, batch, heads, n)
    gk = splits * k.block_j * _align(d_qk, k.block_i) if k.accum_grad_kv else 0
    gv = splits * k.block_j * _align(d_v, k.block_i) if k.accum_grad_kv else 0
    gq = _ceil(m, k.block_i) * _ceil(d_qk, k.block_j) * (4 + k.block_i * k.block_j) if k.accum_grad_q else 0
    return batch * heads * _align(gk + gv + gq, 4) * F32


def choose(capability, smem_optin, dtype: str, batch: int, heads: int, m: int, n: int, d_qk: int, d_v: int,
           dropout: bool = False) -> Choice | None:
    k = select_backward(capability, smem_optin, dtype, m, n, d_qk, d_v, dropout)
    if k is None:
        return None
    return Choice(k, num_splits_key(k, batch, heads, n), workspace_bytes(k, batch, heads, m, n, d_qk, d_v))


# -- forward -------------------------------------------------------------------------------

@dataclass(frozen=True)
class FwdKernel:
    """`AttentionKernel<scalar_t, Arch, aligned, kQueriesPerBlock, kKeysPerBlock, kMaxK>`."""

    arch: int
    dtype: str
    queries: int
    keys: int
    max_k: int

    @property
    def name(self) -> str:
        acc = "rf" if self.max_k <= self.keys else "gmem"
        return f"fmha_cutlassF_{self.dtype}_aligned_{self.queries}x{self.keys}_{acc}_sm{self.arch}"

    @property
    def needs_output_accum(self) -> bool:
        """kernel_forward.h `kNeedsOutputAccumulatorBuffer = !kSingleValueIteration &&
        output_t != float`, with `kSingleValueIteration = kMaxK <= kKeysPerBlock`."""
        return self.max_k > self.keys and self.dtype != "f32"


@lru_cache(maxsize=None)
def forward_kernels(arch: int, dtype: str) -> tuple[FwdKernel, ...]:
    """`dispatch_cutlassF_<dtype>_sm<arch>` (generate_kernels.py `FwdKernel.get_all`), in order."""
    if dtype == "bf16" and arch < 80:
        return ()
    shapes = [(64, 64, 64), (64 if arch > 75 else 32, 128, 128), (32, 128, 2**16)]
    return tuple(FwdKernel(arch, dtype, q, k, mk) for q, k, mk in shapes)


def select_forward(capability: tuple[int, int], dtype: str, d_qk: int, d_v: int) -> FwdKernel | None:
    """attention.cu `_efficient_attention_forward`: the first kernel with `kMaxK >= max(Dqk, Dv)`.
    The forward launcher's shared-memory check is not modelled: its tiles (at most 64 x 128) are
    assumed to fit every card from sm50."""
    for k in forward_kernels(arch_of(capability), dtype):
        if k.max_k >= max(d_qk, d_v):
            return k
    return None
