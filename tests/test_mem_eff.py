"""The memory-efficient kernels, derived by hand from torch's source, pinned per card.

Forum case: SAGAN at 128 x 256 x 256, one head, N = M = 65536 tokens, Dqk = C/8 = 16, Dv = 128;
also (8, 64) and (32, 256). Batch 1, so B x H = 1.

Derivation (pytorch/pytorch aten/src/ATen/native/transformers/cuda/):
- mem_eff_attention/kernels/generate_kernels.py `BwdKernel.get_all` builds, per architecture
  range (sm50 for sm60, sm70, sm75, sm80 for sm80-sm90), block_i in {64} plus 128 when kMaxK > 64
  on sm80+ (or sm70+ for fp16); `kOutputInRF = half and kMaxK <= block_i`; preload (sm80, fp16,
  in registers) makes block_j 128 for kMaxK > 64; seqaligned twins on sm70/sm80 fp16 up to 128;
  the k96 kernel only on sm86/sm89. Sorted: no dropout, smallest kMaxK, largest block_i,
  seqaligned first.
- attention_backward.cu `launchKernel` takes the first with kMaxK >= max(Dqk, Dv), M and N
  divisible by the blocks for seqaligned, and `sizeof(SharedStorage)` within
  `sharedMemPerBlockOptin` (64 KiB sm75, 96 KiB sm70, 48 KiB sm60, 163 KiB sm80, 99 KiB
  sm86/sm89, 227 KiB sm90). On sm86/sm89 the 128x128 fp16 kernel (>= 128.5 KiB) and the 128x64
  fp32 kernels (>= 104.5 KiB) do not fit.
- kernel_backward.h `workspace_size()` = B x H x align4(gk + gv + gq) x 4 bytes with
  gq = ceil(M / BI) x ceil(Dqk / BJ) x (4 + BI x BJ) when split keys (sm70+) or fp16;
  gk, gv = splits x BJ x align(D, BI) when fp16 and not in registers;
  splits = min(ceil(N / BJ), 200 / (B x H)) then; 1 on sm50.
"""

import pytest
import torch

from sa_profiler.targets import gpus
from sa_profiler.engine import mem_eff
from sa_profiler.engine.rules import RULES

N = 65536
F = 4  # bytes per float


def _dq(bi, bj, d_qk=16):
    """`GradQTempStorage` tiles: ceil(M / BI) x ceil(Dqk / BJ) of (16 B + BI x BJ floats)."""
    return -(-N // bi) * -(-d_qk // bj) * (4 + bi * bj)


def _dkdv(splits, bi, bj, d_qk, d_v):
    """dK/dV staging: splits x BJ x align_up(D, BI), each."""
    return splits * bj * (-(-d_qk // bi) * bi) + splits * bj * (-(-d_v // bi) * bi)


CASES = [
    # T4 / RTX 2080 Ti (sm75, 64 KiB): fp16 128x64 k128 keeps dK/dV in registers; fp32 is SIMT 64x64.
    ("t4", "f16", 16, 128, "f16_aligned_128x64_k128_sm75", _dq(128, 64) * F),
    ("t4", "f16", 8, 64, "f16_aligned_64x64_k64_sm75", _dq(64, 64, 8) * F),
    ("t4", "f16", 32, 256, "f16_aligned_128x64_k65536_sm75", (_dkdv(200, 128, 64, 32, 256) + _dq(128, 64, 32)) * F),
    ("t4", "f32", 16, 128, "f32_aligned_64x64_k128_sm75", _dq(64, 64) * F),
    ("t4", "f32", 8, 64, "f32_aligned_64x64_k64_sm75", _dq(64, 64, 8) * F),
    ("t4", "f32", 32, 256, "f32_aligned_64x64_k65536_sm75", _dq(64, 64, 32) * F),
    ("rtx-2080-ti", "f16", 16, 128, "f16_aligned_128x64_k128_sm75", _dq(128, 64) * F),
    ("rtx-2080-ti", "f16", 8, 64, "f16_aligned_64x64_k64_sm75", _dq(64, 64, 8) * F),
    ("rtx-2080-ti", "f16", 32, 256, "f16_aligned_128x64_k65536_sm75", (_dkdv(200, 128, 64, 32, 256) + _dq(128, 64, 32)) * F),
    ("rtx-2080-ti", "f32", 16, 128, "f32_aligned_64x64_k128_sm75", _dq(64, 64) * F),
    ("rtx-2080-ti", "f32", 8, 64, "f32_aligned_64x64_k64_sm75", _dq(64, 64, 8) * F),
    ("rtx-2080-ti", "f32", 32, 256, "f32_aligned_64x64_k65536_sm75", _dq(64, 64, 32) * F),
] + [
    # sm86 / sm89 (99 KiB): 64x64 tiles outside registers, 200 key splits at batch 1.
    (card, *case) for card in ("rtx-3060", "a10g", "l4") for case in [
        ("f16", 16, 128, "f16_aligned_64x64_k128_seqaligned_sm80", (_dkdv(200, 64, 64, 16, 128) + _dq(64, 64)) * F),
        ("f16", 8, 64, "f16_aligned_64x64_k64_seqaligned_sm80", _dq(64, 64, 8) * F),
        ("f16", 32, 256, "f16_aligned_128x64_k65536_sm80", (_dkdv(200, 128, 64, 32, 256) + _dq(128, 64, 32)) * F),
        ("f32", 16, 128, "f32_aligned_64x64_k128_sm80", _dq(64, 64) * F),
        ("f32", 8, 64, "f32_aligned_64x64_k64_sm80", _dq(64, 64, 8) * F),
        ("f32", 32, 256, "f32_aligned_64x64_k65536_sm80", _dq(64, 64, 32) * F),
    ]
] + [
    # A100 / H100 (163 / 227 KiB): the 128x128 preload kernel keeps dK/dV in registers.
    (card, *case) for card in ("a100-40gb", "h100") for case in [
        ("f16", 16, 128, "f16_aligned_128x128_k128_seqaligned_sm80", _dq(128, 128) * F),
        ("f16", 8, 64, "f16_aligned_64x64_k64_seqaligned_sm80", _dq(64, 64, 8) * F),
        ("f16", 32, 256, "f16_aligned_128x64_k65536_sm80", (_dkdv(200, 128, 64, 32, 256) + _dq(128, 64, 32)) * F),
        ("f32", 16, 128, "f32_aligned_128x64_k128_sm80", _dq(128, 64) * F),
        ("f32", 8, 64, "f32_aligned_64x64_k64_sm80", _dq(64, 64, 8) * F),
        ("f32", 32, 256, "f32_aligned_128x64_k65536_sm80", _dq(128, 64, 32) * F),
    ]
] + [
    # V100 (sm70, 96 KiB): fp16 as Turing plus seqaligned twins; fp32 is SIMT.
    ("v100-16gb", "f16", 16, 128, "f16_aligned_128x64_k128_seqaligned_sm70", _dq(128, 64) * F),
    ("v100-16gb", "f16", 8, 64, "f16_aligned_64x64_k64_seqaligned_sm70", _dq(64, 64, 8) * F),
    ("v100-16gb", "f16", 32, 256, "f16_aligned_128x64_k65536_sm70", (_dkdv(200, 128, 64, 32, 256) + _dq(128, 64, 32)) * F),
    ("v100-16gb", "f32", 16, 128, "f32_aligned_64x64_k128_sm70", _dq(64, 64) * F),
    ("v100-16gb", "f32", 8, 64, "f32_aligned_64x64_k64_sm70", _dq(64, 64, 8) * F),
    ("v100-16gb", "f32", 32, 256, "f32_aligned_64x64_k65536_sm70", _dq(64, 64, 32) * F),
    # P100 (sm60 runs sm50 kernels): no split keys, so one split, and fp32 needs no workspace.
    ("p100", "f16", 16, 128, "f16_aligned_64x64_k128_sm50", (_dkdv(1, 64, 64, 16, 128) + _dq(64, 64)) * F),
    ("p100", "f16", 8, 64, "f16_aligned_64x64_k64_sm50", _dq(64, 64, 8) * F),
    ("p100", "f16", 32, 256, "f16_aligned_64x64_k65536_sm50", (_dkdv(1, 64, 64, 32, 256) + _dq(64, 64, 32)) * F),
    ("p100", "f32", 16, 128, "f32_aligned_64x64_k128_sm50", 0),
    ("p100", "f32", 8, 64, "f32_aligned_64x64_k64_sm50", 0),
    ("p100", "f32", 32, 256, "f32_aligned_64x64_k65536_sm50", 0),
]


@pytest.mark.parametrize("card,dtype,d_qk,d_v,kernel,workspace", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}x{c[3]}" for c in CASES])
def test_kernel_and_workspace_per_card(card, dtype, d_qk, d_v, kernel, workspace):
    gpu = gpus.lookup(card)
    choice = mem_eff.choose(gpu.capability, gpu.smem_per_block, dtype, 1, 1, N, N, d_qk, d_v)
    assert choice.kernel.name == f"fmha_cutlassB_{kernel}"
    assert choice.workspace_bytes == workspace


def test_forum_case_figures_of_the_issue():
    """T4: about 16.8 MB per image (today's rule said 33.5 MB); RTX 3060 at batch 1: about
    26.6 MB, and the dK/dV staging shrinks as 200 / B caps the key splits."""
    t4, rtx = gpus.lookup("t4"), gpus.lookup("rtx-3060")
    assert mem_eff.choose(t4.capability, t4.smem_per_block, "f16", 1, 1, N, N, 16, 128).workspace_bytes == 16_785_408
    at1 = mem_eff.choose(rtx.capability, rtx.smem_per_block, "f16", 1, 1, N, N, 16, 128)
    at84 = mem_eff.choose(rtx.capability, rtx.smem_per_block, "f16", 84, 1, N, N, 16, 128)
    assert at1.workspace_bytes == 26_624_000 and (at1.num_splits_key, at84.num_splits_key) == (200, 2)
    assert at84.workspace_bytes < 84 * 17_000_000


def test_shared_memory_decides_only_where_the_generator_says():
    """"We still need fallback to 64 for GPUs with less shmem (Sm75, Sm86 ...)": the 128-row
    sm80 kernels that keep dK/dV in registers or run fp32 exceed 99 KiB, the k96 kernel made
    for sm86/sm89 fits it, and every sm75 kernel fits 64 KiB."""
    by_name = {k.name: k for dt in ("f16", "f32") for k in mem_eff.backward_kernels(80, dt)}
    assert by_name["fmha_cutlassB_f16_aligned_128x128_k128_sm80"].smem_bytes > 99 * 1024
    assert by_name["fmha_cutlassB_f32_aligned_128x64_k128_sm80"].smem_bytes > 99 * 1024
    assert by_name["fmha_cutlassB_f16_aligned_128x64_k96_sm80"].smem_bytes <= 99 * 1024
    assert all(k.smem_bytes <= 64 * 1024 for dt in ("f16", "f32") for k in mem_eff.backward_kernels(75, dt))
    assert all(k.smem_bytes <= 163 * 1024 for dt in ("f16", "f32") for k in mem_eff.backward_kernels(80, dt))


def test_k96_kernel_only_on_sm86_and_sm89():
    """dispatch_cond "cc == 86 || cc == 89": Dqk = Dv = 80 keeps dK/dV in registers there only."""
    l4, a100 = gpus.lookup("l4"), gpus.lookup("a100")
    assert mem_eff.select_backward(l4.capability, l4.smem_per_block, "f16", N, N, 80, 80).max_k == 96
    assert mem_eff.select_backward(a100.capability, a100.smem_per_block, "f16", N, N, 80, 80).max_k == 128


def test_seqaligned_needs_divisible_lengths():
    h100 = gpus.lookup("h100")
    k = mem_eff.select_backward(h100.capability, h100.smem_per_block, "f16", 576, 576, 16, 128)
    assert not k.seqaligned and k.block_i == 128  # 576 % 128 != 0


def test_split_keys_heuristic():
    """attention_backward.cu: one split when the grid has >= 256 blocks and N <= 2 x BJ; at least
    one split when 200 / (B x H) is 0."""
    k = mem_eff.select_backward((8, 6), 99 * 1024, "f16", N, N, 16, 128)
    assert mem_eff.num_splits_key(k, 256, 1, 128) == 1
    assert mem_eff.num_splits_key(k, 300, 1, N) == 1


def _hidden(card, dtype, d_qk, d_v, batch=1, n=N):
    gpu = gpus.lookup(card)
    q = torch.empty(batch, 1, n, d_qk, dtype=dtype, device="meta")
    v = torch.empty(batch, 1, n, d_v, dtype=dtype, device="meta")
    grad = torch.empty(batch, n, d_v, dtype=dtype, device="meta").unsqueeze(1)  # BHMK, dense in BMHK too
    return RULES["_scaled_dot_product_efficient_attention_backward"].temps([grad, q, q, v], [], gpu)


def test_launcher_delta_on_sm70_outside_registers():
    """kKernelComputesDelta is false for fp16 on sm70 when dK/dV are not in registers: the
    launcher makes two float32 copies, their product and the sum, about 3 x B x M x H x Dv x 4
    bytes, more than the kernel's workspace (201 MB at Dqk 32, Dv 256)."""
    temps = _hidden("v100-16gb", torch.float16, 32, 256)
    assert sum(t[0] for t in temps) == 3 * N * 256 * F + N * F  # two copies, product; the sum is delta (H = 1)
    assert all("workspace" not in t[3] for t in temps)
    assert not any("for delta" in t[3] for t in _hidden("t4", torch.float16, 32, 256))


def test_fp32_delta_product_sets_the_peak():
    """fp32 kernels never compute delta: `grad_out * out` (B x M x H x Dv floats) outlives the
    sum and is larger than the dQ workspace on every architecture."""
    for card in ("t4", "rtx-3060", "h100", "v100-16gb", "p100"):
        temps = _hidden(card, torch.float32, 16, 128)
        assert sum(t[0] for t in temps) == N * 128 * F + N * F, card
