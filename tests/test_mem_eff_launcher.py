"""engine/mem_eff.py's launcher decisions, each against a value derived by hand from torch's
source (attention_backward.cu, kernel_backward.h, gemm_kernel_utils.h; see the module
docstring): the architecture tag, the GEMM type, the split-keys count, the kernel launched and
its workspace (tests written against surviving mutants)."""

import pytest

from sa_profiler.engine import mem_eff
from sa_profiler.engine.mem_eff import BwdKernel, Choice, GemmType, arch_of, choose, gemm_type, num_splits_key
from sa_profiler.engine.mem_eff import select_backward, workspace_bytes

KiB = 1024


@pytest.mark.parametrize("capability, arch", [
    ((5, 0), 50), ((6, 0), 50), ((6, 1), 50), ((7, 0), 70), ((7, 2), 70), ((7, 5), 75), ((8, 0), 80),
    ((8, 6), 80), ((8, 9), 80), ((9, 0), 80), ((10, 0), 80), ((10, 3), 80), ((12, 0), 80)])
def test_arch_of(capability, arch):
    """`dispatch_cutlassB` ranges [50, 70), [70, 75), [75, 80), [80, 100); sm100 and newer as sm80."""
    assert arch_of(capability) == arch


def test_arch_of_rejects_cards_before_sm50():
    with pytest.raises(ValueError, match=r"^memory-efficient attention needs compute capability 5\.0, not \(3, 7\)$"):
        arch_of((3, 7))


# gemm_kernel_utils.h DefaultGemmType: TensorOp (ThreadK 32, alignment 4) for f16/bf16 from sm75
# and f32 (TF32) from sm80; alignment 2 for f16 on sm70; SIMT (ThreadK 8, alignment 1)
# otherwise. Stages: 3 (multistage, sm80), else 2.
TENSOR_OP_SM80 = GemmType(True, 32, 4, 3)
TENSOR_OP_SM75 = GemmType(True, 32, 4, 2)
VOLTA_F16 = GemmType(True, 32, 2, 2)
SIMT = GemmType(False, 8, 1, 2)


@pytest.mark.parametrize("arch, dtype, expected", [
    (50, "f16", SIMT), (50, "f32", SIMT), (50, "bf16", SIMT),
    (70, "f16", VOLTA_F16), (70, "f32", SIMT), (70, "bf16", SIMT),
    (75, "f16", TENSOR_OP_SM75), (75, "bf16", TENSOR_OP_SM75), (75, "f32", SIMT),
    (80, "f16", TENSOR_OP_SM80), (80, "bf16", TENSOR_OP_SM80), (80, "f32", TENSOR_OP_SM80)])
def test_gemm_type(arch, dtype, expected):
    got = gemm_type(arch, dtype)
    assert (got.tensor_cores, got.thread_k, got.min_alignment, got.stages) == (
        expected.tensor_cores, expected.thread_k, expected.min_alignment, expected.stages)
    assert type(got.tensor_cores) is bool


F32_SM80 = BwdKernel(80, "f32", 64, 64, 128, False)  # dK/dV in float: no staging
F16_GMEM = BwdKernel(80, "f16", 64, 64, 128, False)  # kMaxK > BI: dK/dV staged in the workspace
SM50_F16 = BwdKernel(50, "f16", 64, 64, 128, False)  # no split keys


@pytest.mark.parametrize("kernel, batch, heads, n, splits", [
    # ceil(N / BJ) key blocks
    (F32_SM80, 1, 1, 65536, 1024), (F32_SM80, 1, 1, 129, 3), (F32_SM80, 1, 1, 128, 2), (F32_SM80, 1, 1, 64, 1),
    # 1 once B x H >= 256 and at most two key blocks (N <= 2 x BJ = 128)
    (F32_SM80, 16, 16, 128, 1), (F32_SM80, 256, 1, 100, 1), (F32_SM80, 1, 256, 128, 1),
    (F32_SM80, 255, 1, 128, 2), (F32_SM80, 16, 16, 129, 3), (F32_SM80, 16, 16, 192, 3),
    (F32_SM80, 257, 1, 128, 1),
    # at most 200 // (B x H) when dK/dV go through the workspace, and at least 1
    (F16_GMEM, 2, 3, 65536, 33), (F16_GMEM, 3, 2, 65536, 33), (F16_GMEM, 1, 1, 640, 10), (F16_GMEM, 1, 7, 65536, 28),
    (F16_GMEM, 201, 1, 65536, 1), (F16_GMEM, 16, 16, 128, 1),
    # sm50: no split keys
    (SM50_F16, 1, 1, 65536, 1), (SM50_F16, 2, 3, 640, 1)])
def test_num_splits_key(kernel, batch, heads, n, splits):
    got = num_splits_key(kernel, batch, heads, n)
    assert got == splits and type(got) is int


def test_workspace_without_accumulators_is_empty():
    """sm50 float32: no split keys and float output, so neither dQ nor dK/dV accumulate."""
    k = BwdKernel(50, "f32", 64, 64, 128, False)
    assert not k.accum_grad_q and not k.accum_grad_kv
    assert workspace_bytes(k, 2, 3, 1000, 640, 100, 128) == 0


def test_workspace_sm50_half_holds_dq_and_dkdv():
    """sm50 f16: one key split; dK/dV staged (not in registers), dQ tiles (output_t != float).
    Per (b, h): gk = 1 x 64 x align(100, 64) = 8192, gv = 64 x 128 = 8192,
    gq = ceil(1000 / 64) x ceil(100 / 64) x (4 + 64 x 64) = 16 x 2 x 4100 = 131200; x 6 x 4 B."""
    assert workspace_bytes(SM50_F16, 2, 3, 1000, 640, 100, 128) == (8192 + 8192 + 131200) * 6 * 4


def test_workspace_rounds_each_head_to_four_floats():
    """gq = ceil(1 / 64) x ceil(1 / 64) x (4 + 64 x 64) = 4100 (a multiple of 4); sm80 f32 has
    no dK/dV staging. An odd head count keeps the per-head rounding visible: 3 x 4100 x 4."""
    assert workspace_bytes(F32_SM80, 1, 3, 1, 1, 1, 1) == 3 * 4100 * 4


def _names(capability, smem, dtype, m, n, d_qk, d_v, **kw):
    k = select_backward(capability, smem, dtype, m, n, d_qk, d_v, **kw)
    return None if k is None else k.name


def test_k96_kernel_only_on_sm86_and_sm89():
    """The stable-diffusion kernel (kMaxK 96, `dispatch_cond` cc 86 or 89) is launched for D = 96
    there, and skipped on sm80 / sm90 (next: the 128x128 preload kernel)."""
    for cc in ((8, 6), (8, 9)):
        assert _names(cc, 99 * KiB, "f16", 1000, 1000, 96, 96) == "fmha_cutlassB_f16_aligned_128x64_k96_sm80"
    for cc in ((8, 0), (9, 0)):
        assert _names(cc, 227 * KiB, "f16", 1000, 1000, 96, 96) == "fmha_cutlassB_f16_aligned_128x128_k128_sm80"
    assert _names((8, 7), 227 * KiB, "bf16", 1000, 1000, 96, 96) == "fmha_cutlassB_bf16_aligned_128x128_k128_sm80"


def test_dropout_needs_a_dropout_kernel():
    assert _names((8, 0), 163 * KiB, "f16", 128, 128, 64, 64) == "fmha_cutlassB_f16_aligned_64x64_k64_seqaligned_sm80"
    assert _names((8, 0), 163 * KiB, "f16", 128, 128, 64, 64, dropout=False) == \
        "fmha_cutlassB_f16_aligned_64x64_k64_seqaligned_sm80"
    assert _names((8, 0), 163 * KiB, "f16", 128, 128, 64, 64, dropout=True) == \
        "fmha_cutlassB_f16_aligned_64x64_k64_dropout_sm80"


def test_seqaligned_needs_both_lengths_divisible():
    """The seqaligned twin needs M % BI == 0 and N % BJ == 0 (64 x 64 here)."""
    assert _names((8, 0), 163 * KiB, "f16", 128, 192, 64, 64).endswith("_k64_seqaligned_sm80")
    assert _names((8, 0), 163 * KiB, "f16", 128, 100, 64, 64) == "fmha_cutlassB_f16_aligned_64x64_k64_sm80"
    assert _names((8, 0), 163 * KiB, "f16", 100, 128, 64, 64) == "fmha_cutlassB_f16_aligned_64x64_k64_sm80"
    assert _names((8, 0), 163 * KiB, "f16", 100, 100, 64, 64) == "fmha_cutlassB_f16_aligned_64x64_k64_sm80"


def test_strides_must_be_multiples_of_the_alignment():
    """`kMinimumAlignment`: 4 for TensorOp, 2 for f16 on sm70, 1 for SIMT."""
    assert _names((8, 0), 163 * KiB, "f16", 100, 100, 64, 64, strides=(64, 8, 4)) == \
        "fmha_cutlassB_f16_aligned_64x64_k64_sm80"
    assert _names((8, 0), 163 * KiB, "f16", 100, 100, 64, 64, strides=(64, 6)) is None
    assert _names((7, 0), 96 * KiB, "f16", 100, 100, 64, 64, strides=(6, 2)) == \
        "fmha_cutlassB_f16_aligned_64x64_k64_sm70"
    assert _names((7, 0), 96 * KiB, "f16", 100, 100, 64, 64, strides=(3,)) is None
    assert _names((7, 5), 64 * KiB, "f16", 100, 100, 64, 64, strides=(2,)) is None
    assert _names((7, 5), 64 * KiB, "f32", 100, 100, 64, 64, strides=(3,)) == "fmha_cutlassB_f32_aligned_64x64_k64_sm75"


def test_shared_memory_limit_is_inclusive():
    """A kernel whose SharedStorage is exactly the card's opt-in limit fits; one byte less does not."""
    first = select_backward((8, 0), 10**9, "f16", 256, 256, 128, 128)
    assert first.name == "fmha_cutlassB_f16_aligned_128x128_k128_seqaligned_sm80"
    assert select_backward((8, 0), first.smem_bytes, "f16", 256, 256, 128, 128) == first
    assert select_backward((8, 0), first.smem_bytes - 1, "f16", 256, 256, 128, 128).block_i == 64


def test_choose_the_kernel_splits_and_workspace():
    """T4 (sm75, 64 KiB), f16, B = 2, H = 3, M = 1000, N = 640, Dqk = 100, Dv = 256.
    Kernel: the first with kMaxK >= 256 is the 128x64 k65536 (dK/dV not in registers).
    Splits: ceil(640 / 64) = 10, under 200 // 6 = 33. Per (b, h): gk = 10 x 64 x align(100, 128)
    = 81920, gv = 10 x 64 x 256 = 163840, gq = ceil(1000 / 128) x ceil(100 / 64) x (4 + 128 x 64)
    = 8 x 2 x 8196 = 131136; x 6 heads x 4 bytes."""
    c = choose((7, 5), 64 * KiB, "f16", 2, 3, 1000, 640, 100, 256)
    assert isinstance(c, Choice)
    assert c.kernel.name == "fmha_cutlassB_f16_aligned_128x64_k65536_sm75"
    assert c.num_splits_key == 10
    assert c.workspace_bytes == (81920 + 163840 + 131136) * 6 * 4
    # M and N, B and H, Dqk and Dv exchanged give other answers
    d = choose((7, 5), 64 * KiB, "f16", 3, 2, 640, 1000, 256, 100)
    assert d.num_splits_key == 16
    # gk = 16 x 64 x 256, gv = 16 x 64 x 128, gq = ceil(640 / 128) x ceil(256 / 64) x 8196
    assert d.workspace_bytes == (262144 + 131072 + 5 * 4 * 8196) * 6 * 4


def test_choose_with_dropout_and_without_a_kernel():
    c = choose((8, 0), 163 * KiB, "f16", 1, 1, 128, 128, 64, 64)
    assert c.kernel.name == "fmha_cutlassB_f16_aligned_64x64_k64_seqaligned_sm80"
    assert choose((8, 0), 163 * KiB, "f16", 1, 1, 128, 128, 64, 64, dropout=True).kernel.dropout
    assert choose((8, 0), 163 * KiB, "f16", 1, 1, 128, 128, 2**16 + 1, 64) is None
    assert choose((7, 5), 64 * KiB, "bf16", 1, 1, 128, 128, 64, 64) is None  # no bf16 kernels before sm80


def test_forward_kernel_selection():
    assert mem_eff.select_forward((8, 0), "f16", 64, 64).name == "fmha_cutlassF_f16_aligned_64x64_rf_sm80"
    assert mem_eff.select_forward((8, 0), "f16", 16, 128).name == "fmha_cutlassF_f16_aligned_64x128_rf_sm80"
    assert mem_eff.select_forward((7, 5), "f32", 16, 128).name == "fmha_cutlassF_f32_aligned_32x128_rf_sm75"
    assert mem_eff.select_forward((8, 0), "f16", 32, 256).name == "fmha_cutlassF_f16_aligned_32x128_gmem_sm80"
    assert mem_eff.select_forward((8, 0), "f16", 32, 2**16 + 1) is None
