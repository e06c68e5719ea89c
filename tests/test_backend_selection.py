"""Backend selection against torch's own rules, one boundary at a time.

Expected values are read off aten/src/ATen/native/transformers/cuda/sdp_utils.cpp
(`can_use_flash_attention`, `can_use_mem_efficient_attention`, `can_use_cudnn_attention`,
`check_prefer_cudnn_attention`, `minimum_gemm_alignment`, `check_cudnn_tensor_shapes`,
`check_cudnn_d256_bprop_head_dim`) and sdp_utils_cpp.h (`check_attn_mask_shape`,
`check_batch_size_and_num_heads_dense`, `check_last_dim_stride_equals_1_dense`), not from the
module under test: each case sits on one side of one rule's boundary.
"""

import pytest
import torch

from sa_profiler.attention import backends as B
from sa_profiler.attention.backends import CPU, Call, DeviceCaps

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64


def cuda(cc, version="2.11.0", cudnn=None, preferred=False):
    return DeviceCaps("cuda", cc, cudnn_preferred=preferred, torch_version=version, cudnn_version=cudnn)


def call(dtype=F16, q=(2, 4, 16, 64), k=None, v=None, **kw):
    k = k or q
    v = v or k
    return Call(dtype, tuple(q), tuple(k), tuple(v), **kw)


SM60, SM70, SM75, SM80, SM86, SM89, SM90 = (cuda(cc) for cc in ((6, 0), (7, 0), (7, 5), (8, 0), (8, 6), (8, 9),
                                                                 (9, 0)))


# -- device facts ----------------------------------------------------------------------------
def test_labels():
    assert CPU.label == "CPU"
    assert cuda((8, 6)).label == "sm86"
    assert cuda((12, 1)).label == "sm121"


def test_caps_of_a_device_and_the_simulated_one():
    assert B.caps_for(torch.device("cpu")) is CPU
    assert B.caps_for(torch.device("meta")) is CPU  # nothing simulated: CPU
    h100 = cuda((9, 0))
    from sa_profiler.attention.routing import simulating

    with simulating(h100) as routing:
        assert B.caps_for(torch.device("meta")) is h100
        assert B.caps_for(torch.device("cpu")) is CPU
        assert routing.caps is h100
    assert B.caps_for(torch.device("meta")) is CPU  # reset on exit


def test_caps_of_a_cuda_device(monkeypatch):
    """The local card's facts: its capability, the running torch and the loaded cuDNN (a CPU build
    has neither card nor cuDNN, so both are given here)."""
    seen = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: seen.append(d) or (9, 0))
    monkeypatch.setattr(B, "_local_cudnn", lambda: 91600)
    caps = B.caps_for(torch.device("cuda", 1))
    assert caps == DeviceCaps("cuda", (9, 0), cudnn_preferred=B.cudnn_preferred((9, 0), torch.__version__, 91600),
                              torch_version=torch.__version__, cudnn_version=91600)
    assert seen == [torch.device("cuda", 1)]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: (8, 6))
    assert B.caps_for(torch.device("cuda")) == DeviceCaps("cuda", (8, 6), False, torch.__version__, 91600)
    monkeypatch.setattr(torch, "__version__", "2.10.0")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: (9, 0))
    assert B.caps_for(torch.device("cuda")).cudnn_preferred is True
    monkeypatch.setattr(B, "_local_cudnn", lambda: 91500)
    assert B.caps_for(torch.device("cuda")).cudnn_preferred is False


def test_a_cards_caps_name_the_torch_asked_for_else_the_running_one():
    from sa_profiler.targets import gpus

    assert gpus.lookup("h100").caps().torch_version == torch.__version__
    assert gpus.lookup("h100").caps("2.9").torch_version == "2.9"
    assert gpus.lookup("h100").caps("2.9").cudnn_preferred is True  # 2.9 put cuDNN first on sm90
    assert gpus.lookup("h100").caps("2.8").cudnn_preferred is False


@pytest.mark.parametrize("version,given,expected", [
    ("2.10.0", None, 91900), ("2.13", None, 91900), ("2.9.1", None, 90501), ("2.4", None, 90501),
    ("2.11.0", 90100, 90100), ("2.4.0", 92300, 92300),
])
def test_assumed_cudnn(version, given, expected):
    assert B.assumed_cudnn(version, given) == expected


@pytest.mark.parametrize("cc,version,cudnn,first", [
    # from 2.10: sm90/sm100/sm103 (CUDA < 13 builds: minor 0 or 3) and cuDNN > 9.15.00
    ((9, 0), "2.10.0", 91501, True), ((9, 0), "2.10.0", 91500, False), ((10, 3), "2.10.0", 91600, True),
    ((10, 0), "2.12", None, True), ((9, 0), "2.14.0+cu130", None, True),
    ((10, 1), "2.10.0", 91600, False), ((8, 0), "2.10.0", 91600, False), ((12, 0), "2.10.0", 91600, False),
    # 2.9: sm90 and sm100 whatever the cuDNN
    ((9, 0), "2.9.0", 90100, True), ((10, 0), "2.9.1", None, True), ((10, 3), "2.9.0", None, False),
    # 2.5.0 only, on sm90 only
    ((9, 0), "2.5.0", None, True), ((9, 0), "2.5.0+cu124", None, True), ((10, 0), "2.5.0", None, False),
    ((9, 0), "2.5.1", None, False), ((9, 0), "2.8.0", None, False), ((9, 0), "2.6.0", None, False),
])
def test_cudnn_preference(cc, version, cudnn, first):
    assert B.cudnn_preferred(cc, version, cudnn) is first


def test_local_preference_on_a_cpu_build():
    assert B.local_cudnn_preferred((8, 6)) is False
    assert B.local_cudnn_preferred((9, 0)) is B.cudnn_preferred((9, 0), torch.__version__, B._local_cudnn())


def test_version_tuple():
    assert B._version_tuple("2.10.0+cu128") == (2, 10)
    assert B._version_tuple("2.5") == (2, 5)


def test_priority():
    assert B.priority(CPU) == ("flash", "math")
    assert B.priority(cuda((9, 0))) == ("flash", "efficient", "math", "cudnn")
    assert B.priority(cuda((9, 0), preferred=True)) == ("cudnn", "flash", "efficient", "math")


# -- Call ------------------------------------------------------------------------------------
def test_call_from_tensors():
    q = torch.empty(2, 3, 5, 8)
    k = torch.empty(2, 3, 8, 7).transpose(-1, -2)  # (2, 3, 7, 8), last-dim stride 7
    v = torch.empty(2, 3, 7, 17)[..., 1:]  # storage offset 1, 16 wide
    mask = torch.zeros(5, 1).expand(5, 7)  # last-dim stride 0
    c = Call.of(q, k, v, mask, 0.25, True, True)
    assert c == Call(F32, (2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 16), (1, 7, 1), (5, 7), 0, False, 0.25, True, True,
                     False, (0, 0, 4))
    assert Call.of(q, q, q).mask_shape is None and Call.of(q, q, q).mask_last_stride == 1
    assert Call.of(q, q, q, torch.tensor(True)).mask_last_stride == 1  # a 0-d mask has no last dim
    assert Call.of(q, q, q, torch.zeros(5, 5)).mask_last_stride == 1
    assert Call.of(q, q, q, torch.zeros(5, 5, requires_grad=True)).mask_requires_grad is True


def test_call_requires_grad_is_input_requires_grad():
    q, g = torch.empty(1, 1, 2, 8), torch.empty(1, 1, 2, 8, requires_grad=True)
    assert Call.of(q, q, q).requires_grad is False
    assert Call.of(q, q, g).requires_grad is True
    assert Call.of(g, q, q).requires_grad is True
    with torch.no_grad():
        assert Call.of(g, g, g).requires_grad is False


def test_call_of_head_sizes():
    c = Call.heads(BF16, 24, 192, True)
    assert c == Call(BF16, (1, 1, 2, 24), (1, 1, 2, 24), (1, 1, 2, 192), requires_grad=True)
    assert (c.d_qk, c.d_v) == (24, 192)
    assert Call.heads(F16, 8, 8, batch=3, heads=5, seq_q=7, seq_k=9).k_shape == (3, 5, 9, 8)


# -- which backend -------------------------------------------------------------------------
def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown SDPA backend 'fast'; expected one of math, efficient, flash, cudnn"):
        B.refusal("fast", CPU, call())


def test_math_always_runs():
    assert B.refusal("math", CPU, call(q=(1, 2, 3))) is None
    assert B.refusal("math", SM60, call(F64, q=(1, 1, 0, 5))) is None


@pytest.mark.parametrize("caps,dtype,d_qk,d_v,grad,expected", [
    (CPU, F32, 8, 64, False, "math"), (CPU, F32, 8, 8, True, "flash"), (CPU, torch.complex64, 8, 8, False, "math"),
    (SM60, F16, 8, 64, False, "efficient"), (SM60, BF16, 8, 64, False, "math"),
    (SM75, F16, 12, 64, False, "math"),  # 12 % 8 on tensor cores
    (SM75, F32, 12, 64, False, "efficient"),  # no tensor cores for fp32 below sm80: alignment 1
    (SM80, F16, 8, 64, False, "efficient"), (SM80, F16, 64, 64, False, "flash"), (SM80, F32, 64, 64, False, "efficient"),
    (SM80, F32, 6, 6, False, "math"), (SM80, F64, 64, 64, False, "math"),
    (cuda((9, 0), preferred=True), F16, 64, 64, False, "cudnn"),
    (cuda((9, 0), preferred=True), F32, 64, 64, False, "efficient"),
])
def test_select(caps, dtype, d_qk, d_v, grad, expected):
    assert B.select(caps, dtype, d_qk, d_v, grad) == expected


def test_select_only_among_the_enabled():
    c = call()
    assert B.select_call(SM80, c) == "flash"
    assert B.select_call(SM80, c, ("efficient", "math")) == "efficient"
    assert B.select_call(SM80, c, ("math",)) == "math"
    assert B.select_call(SM80, c, ("cudnn",)) == "cudnn"
    assert B.select_call(SM80, call(F32), ("flash", "cudnn")) is None
    assert B.select_call(CPU, c, ("efficient", "cudnn")) is None


def test_unsupported_reason_passes_grad():
    # sm86 flash backward: head sizes (192, 224] refused, forward fine
    assert B.unsupported_reason("flash", SM86, F16, 200, 200, False) is None
    assert B.unsupported_reason("flash", SM86, F16, 200, 200, True) == \
        "flash attention backward on sm86 supports head sizes up to 192 or above 224 (no dropout)"


# -- CPU flash ---------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["efficient", "cudnn"])
def test_cpu_runs_only_flash(backend):
    assert B.refusal(backend, CPU, call(F32)) == f"the {backend} backend exists only on CUDA"


@pytest.mark.parametrize("c,why", [
    (call(F32, dropout=0.1), "the CPU flash kernel does not run dropout"),
    (call(F32, q=(2, 16, 64)), "fused kernels need 4-D query/key/value, not 3-D/3-D/3-D"),
    (call(F32, q=(2, 4, 16, 64), k=(3, 4, 16, 64)), "fused kernels need equal batch sizes for query, key and value"),
    (call(F32, q=(2, 4, 16, 64), v=(2, 4, 16, 64), k=(2, 2, 16, 64)),
     "fused kernels need equal head counts (query 4, key 2, value 4)"),
    (call(F32, q=(2, 4, 16, 64), k=(2, 2, 16, 64), v=(2, 4, 16, 64), enable_gqa=True),
     "grouped-query attention needs key and value with the same number of heads"),
    (call(F32, q=(2, 4, 16, 64), k=(2, 3, 16, 64), enable_gqa=True),
     "grouped-query attention needs key/value heads (3) dividing query heads (4)"),
    (call(F32, q=(2, 4, 0, 64)), "fused kernels do not run zero-length sequences"),
    (call(F32, q=(2, 4, 8, 64), k=(2, 4, 0, 64)), "fused kernels do not run zero-length sequences"),
    (call(F32, last_strides=(1, 2, 1)), "fused kernels need stride 1 in the head dim (got 1, 2, 1)"),
    (call(F32, q=(2, 4, 16, 1), last_strides=(2, 1, 1)), "fused kernels need stride 1 in the head dim (got 2, 1, 1)"),
    (call(F32, q=(2, 4, 16, 64), k=(2, 4, 16, 64), v=(2, 4, 16, 32)),
     "the CPU flash kernel needs equal head sizes (query/key 64, value 32)"),
    (call(F32, q=(2, 4, 16, 64), k=(2, 4, 16, 32), v=(2, 4, 16, 64)),
     "the CPU flash kernel needs equal head sizes (query/key 64, value 64)"),
    (call(torch.int32), "the CPU flash kernel does not support int32"),
    (call(F32, mask_shape=(16, 5)), "attention mask of shape (16, 5) is not (L or 1, S or 1)"),
])
def test_cpu_flash_refusals(c, why):
    assert B.refusal("flash", CPU, c) == why


@pytest.mark.parametrize("c", [
    call(F32), call(F64), call(F16), call(BF16),
    call(F32, q=(2, 4, 16, 64), k=(2, 2, 16, 64), enable_gqa=True),  # GQA: 2 key/value heads for 4
    call(F32, q=(2, 4, 16, 64), k=(2, 1, 16, 64), enable_gqa=True),
    call(F32, mask_shape=(16, 16), mask_last_stride=0),  # the mask's stride is not checked on CPU
])
def test_cpu_flash_runs(c):
    assert B.refusal("flash", CPU, c) is None


# -- the mask (check_attn_mask_shape) -----------------------------------------------------------
@pytest.mark.parametrize("mask,ok", [
    ((16, 16), True), ((1, 16), True), ((16, 1), True), ((1, 1), True),
    ((2, 4, 16, 16), True), ((1, 1, 16, 16), True), ((2, 1, 1, 16), True), ((1, 4, 16, 1), True),
    ((16,), False), ((15, 16), False), ((16, 15), False), ((3, 4, 16, 16), False), ((2, 3, 16, 16), False),
    ((2, 16, 16), False), ((1, 2, 4, 16, 16), False),
])
def test_mask_shapes(mask, ok):
    """q (2, 4, 16, 64), k (2, 4, 16, 64): L = S = 16, B = 2, H = 4."""
    why = B.refusal("flash", CPU, call(F32, mask_shape=mask))
    assert (why is None) is ok, why
    if not ok and len(mask) >= 2 and mask[-2] in (16, 1) and mask[-1] in (16, 1):
        assert why == f"attention mask of shape {mask} is neither 2-D nor (B or 1, H or 1, L, S)"


def test_mask_shape_uses_the_key_length_for_s():
    c = call(F32, q=(2, 4, 16, 64), k=(2, 4, 24, 64), mask_shape=(16, 24))
    assert B.refusal("flash", CPU, c) is None
    assert B.refusal("flash", CPU, call(F32, q=(2, 4, 16, 64), k=(2, 4, 24, 64), mask_shape=(24, 16))) == \
        "attention mask of shape (24, 16) is not (L or 1, S or 1)"


def test_mask_requiring_grad():
    assert B.refusal("flash", CPU, call(F32, mask_shape=(16, 16), mask_requires_grad=True)) == \
        "the attention mask requires grad"


# -- CUDA flash ---------------------------------------------------------------------------
@pytest.mark.parametrize("caps,c,why", [
    (SM80, call(q=(2, 16, 64)), "flash attention needs 4-D query/key/value"),
    (SM80, call(q=(2, 4, 16, 64), k=(2, 4, 16, 64), v=(2, 16, 64)), "flash attention needs 4-D query/key/value"),
    (SM80, call(mask_shape=(16, 16)), "flash attention does not take an attention mask"),
    (SM80, call(v=(2, 4, 16, 32), k=(2, 4, 16, 64)), "flash attention needs equal head sizes (query/key 64, value 32)"),
    (SM80, call(q=(2, 4, 16, 64), k=(2, 4, 16, 32), v=(2, 4, 16, 64)),
     "flash attention needs equal head sizes (query/key 64, value 64)"),
    (SM80, call(q=(2, 4, 16, 264)), "flash attention supports head sizes up to 256, not 264"),
    (SM80, call(q=(2, 4, 16, 257)), "flash attention supports head sizes up to 256, not 257"),
    (SM75, call(), "flash attention needs compute capability 8.0 to 12.1, not 7.5"),
    (cuda((12, 2)), call(), "flash attention needs compute capability 8.0 to 12.1, not 12.2"),
    (SM80, call(is_causal=True, k=(2, 4, 24, 64)), "flash attention runs is_causal only with equal query and key lengths"),
    (SM80, call(F32), "flash attention runs only float16/bfloat16, not float32"),
    (SM80, call(q=(2, 4, 16, 64), k=(2, 2, 16, 64)), "fused kernels need equal head counts (query 4, key 2, value 2)"),
    (SM80, call(last_strides=(1, 1, 3)), "fused kernels need stride 1 in the head dim (got 1, 1, 3)"),
])
def test_flash_refusals(caps, c, why):
    assert B.refusal("flash", caps, c) == why


@pytest.mark.parametrize("caps,c", [
    (SM80, call(q=(2, 4, 16, 256))), (SM90, call(BF16)), (cuda((12, 1)), call()), (cuda((8, 0)), call()),
    (SM80, call(is_causal=True)), (SM80, call(k=(2, 4, 24, 64))),
    (SM80, call(q=(2, 4, 16, 1), last_strides=(3, 3, 3))),  # a head size of 1: the stride does not matter
    (SM80, call(q=(2, 4, 16, 64), k=(2, 2, 16, 64), enable_gqa=True)),
    (SM80, call(q=(2, 4, 16, 200), requires_grad=True)),  # the backward limit is sm86-sm89 and sm120/121 only
    (SM90, call(q=(2, 4, 16, 256), requires_grad=True, dropout=0.1)),
])
def test_flash_runs(caps, c):
    assert B.refusal("flash", caps, c) is None


@pytest.mark.parametrize("cc", [(8, 6), (8, 7), (8, 8), (8, 9), (12, 0), (12, 1)])
@pytest.mark.parametrize("d,dropout,ok", [
    (192, 0.0, True), (200, 0.0, False), (224, 0.0, False), (232, 0.0, True), (232, 0.1, False), (192, 0.1, True),
])
def test_flash_backward_head_sizes_on_sm86_to_89_and_sm12x(cc, d, dropout, ok):
    c = call(q=(2, 4, 16, d), requires_grad=True, dropout=dropout)
    why = B.refusal("flash", cuda(cc), c)
    assert (why is None) is ok, why
    if not ok:
        assert why == (f"flash attention backward on sm{cc[0]}{cc[1]} supports head sizes up to 192 or above 224 "
                       "(no dropout)")
    assert B.refusal("flash", cuda(cc), call(q=(2, 4, 16, d), dropout=dropout)) is None  # forward only


# -- memory-efficient --------------------------------------------------------------------------
@pytest.mark.parametrize("caps,c,why", [
    (cuda((3, 7)), call(), "memory-efficient attention needs compute capability 5.0 to 12.1, not 3.7"),
    (cuda((4, 9)), call(), "memory-efficient attention needs compute capability 5.0 to 12.1, not 4.9"),
    (cuda((12, 2)), call(), "memory-efficient attention needs compute capability 5.0 to 12.1, not 12.2"),
    (SM80, call(q=(2, 16, 64)), "memory-efficient attention needs 4-D query/key/value"),
    (SM80, call(k=(2, 4, 16, 64, 1)), "memory-efficient attention needs 4-D query/key/value"),
    (SM80, call(q=(2, 4, 16, 64), k=(2, 4, 16, 32), v=(2, 4, 16, 64)),
     "memory-efficient attention needs equal query and key head sizes (64, 32)"),
    (SM80, call(q=(2, 4, 16, 12), v=(2, 4, 16, 64)),
     "memory-efficient attention on sm80 needs query/key head size divisible by 8, not 12"),
    (SM80, call(q=(2, 4, 16, 64), v=(2, 4, 16, 60)),
     "memory-efficient attention on sm80 needs value head size divisible by 8, not 60"),
    (SM80, call(F32, q=(2, 4, 16, 6), v=(2, 4, 16, 8)),
     "memory-efficient attention on sm80 needs query/key head size divisible by 4, not 6"),
    (SM75, call(q=(2, 4, 16, 4)), "memory-efficient attention on sm75 needs query/key head size divisible by 8, not 4"),
    (SM70, call(BF16, q=(2, 4, 16, 4)),
     "memory-efficient attention on sm70 needs query/key head size divisible by 8, not 4"),
    (SM60, call(q=(2, 4, 16, 0)), "memory-efficient attention on sm60 needs query/key head size divisible by 1, not 0"),
    (SM60, call(q=(2, 4, 16, 8), v=(2, 4, 16, 0)),
     "memory-efficient attention on sm60 needs value head size divisible by 1, not 0"),
    (SM80, call(offsets_aligned=(0, 8, 0)),
     "memory-efficient attention on sm80 needs q/k/v storage offsets aligned to 16 bytes"),
    (SM80, call(F32, offsets_aligned=(0, 0, 4)),
     "memory-efficient attention on sm80 needs q/k/v storage offsets aligned to 16 bytes"),
    (SM80, call(offsets_aligned=(2, 0, 0)),
     "memory-efficient attention on sm80 needs q/k/v storage offsets aligned to 16 bytes"),
    (SM80, call(q=(2, 4, 16, 64), k=(2, 2, 16, 64)), "fused kernels need equal head counts (query 4, key 2, value 2)"),
    (SM80, call(last_strides=(1, 2, 1)), "fused kernels need stride 1 in the head dim (got 1, 2, 1)"),
    (SM80, call(q=(2, 4, 16, 1), v=(2, 4, 16, 8), last_strides=(2, 1, 1), dtype=F32),
     "memory-efficient attention on sm80 needs query/key head size divisible by 4, not 1"),
    (SM80, call(mask_shape=(16, 16), mask_last_stride=2), "fused CUDA kernels need the mask's last dim with stride 1"),
    (SM75, call(BF16), "memory-efficient attention on sm75 does not run bfloat16"),
    (SM80, call(F64), "memory-efficient attention on sm80 does not run float64"),
])
def test_efficient_refusals(caps, c, why):
    assert B.refusal("efficient", caps, c) == why


@pytest.mark.parametrize("caps,c", [
    (cuda((5, 0)), call()), (cuda((12, 1)), call()), (SM60, call(q=(2, 4, 16, 3), v=(2, 4, 16, 5))),
    (SM60, call(F32)), (SM75, call(F32, q=(2, 4, 16, 3), v=(2, 4, 16, 5))), (SM80, call(F32, q=(2, 4, 16, 4))),
    (SM80, call(BF16)), (SM80, call(v=(2, 4, 16, 8))),  # value head size differs from query/key's: allowed
    (SM80, call(offsets_aligned=(16, 32, 48))), (SM80, call(F32, offsets_aligned=(16, 0, 0))),
    (SM75, call(offsets_aligned=(2, 2, 2))),  # the offset rule starts at sm80
    (SM80, call(mask_shape=(2, 4, 16, 16))), (SM80, call(q=(2, 4, 16, 64), k=(2, 2, 16, 64), enable_gqa=True)),
])
def test_efficient_runs(caps, c):
    assert B.refusal("efficient", caps, c) is None


# -- cuDNN ---------------------------------------------------------------------------------
@pytest.mark.parametrize("caps,c,why", [
    (SM90, call(q=(2, 16, 64)), "cuDNN attention needs 4-D query/key/value"),
    (SM90, call(v=(4, 2, 4, 16, 64)), "cuDNN attention needs 4-D query/key/value"),
    (SM90, call(F32), "cuDNN attention runs only float16/bfloat16, not float32"),
    (SM90, call(mask_shape=(3, 16)), "attention mask of shape (3, 16) is not (L or 1, S or 1)"),
    (SM75, call(), "cuDNN attention needs compute capability 8.0 to 12.1, not 7.5"),
    (cuda((12, 2)), call(), "cuDNN attention needs compute capability 8.0 to 12.1, not 12.2"),
    (cuda((9, 0), "2.12.0"), call(dropout=0.1), "cuDNN attention needs a dropout probability that is a multiple of 1/16"),
    (SM90, call(q=(2, 4, 0, 64)), "fused kernels do not run zero-length sequences"),
    (SM90, call(q=(2, 4, 16, 64), k=(2, 2, 16, 64), v=(2, 4, 16, 64)),
     "fused kernels need equal head counts (query 4, key 2, value 4)"),
    (SM90, call(q=(2, 6, 16, 64), k=(2, 3, 16, 64), v=(2, 4, 16, 64), enable_gqa=True),
     "grouped-query attention needs key/value heads (3) dividing query heads (6)"),
    (SM90, call(mask_shape=(16, 16), mask_last_stride=0), "fused CUDA kernels need the mask's last dim with stride 1"),
    (SM90, call(q=(65536, 1, 16, 64)), "cuDNN attention supports batch and head counts up to 65535"),
    (SM90, call(q=(1, 65536, 16, 64)), "cuDNN attention supports batch and head counts up to 65535"),
    (SM90, call(q=(2, 4, 16, 64), k=(2, 4, 1, 64)), "cuDNN attention does not run a key length of 1"),
    (SM90, call(q=(2, 4, 1, 64), k=(2, 4, 16, 64), dropout=0.125),
     "cuDNN attention does not run a query length of 1 with dropout"),
    (SM90, call(q=(2, 4, 16, 12)),
     "cuDNN attention on sm90 with torch 2.11 needs query/key head size <= 256 and divisible by 8, not 12"),
])
def test_cudnn_refusals(caps, c, why):
    assert B.refusal("cudnn", caps, c) == why


@pytest.mark.parametrize("caps,c", [
    (SM90, call()), (SM80, call(BF16)), (cuda((12, 1)), call()), (SM90, call(dropout=0.0625)),
    (SM90, call(q=(65535, 65535, 16, 64))),
    (SM90, call(q=(2, 6, 16, 64), k=(2, 3, 16, 64), v=(2, 2, 16, 64), enable_gqa=True)),  # k and v heads may differ
    (SM90, call(q=(2, 4, 1, 64), k=(2, 4, 16, 64))),  # a query length of 1 without dropout
    (SM90, call(dropout=0.1)),  # torch 2.11 has no 1/16 gate (measured: an H100 ran dropout 0.1 on cuDNN)
    (cuda((9, 0), "2.12.0"), call(dropout=0.125)),
])
def test_cudnn_runs(caps, c):
    assert B.refusal("cudnn", caps, c) is None


def test_cudnn_ignores_the_stride_of_a_singleton_head_dim():
    c = call(q=(2, 4, 16, 1), v=(2, 4, 16, 8), last_strides=(5, 5, 5))
    assert B.refusal("cudnn", SM90, c) == \
        "cuDNN attention on sm90 with torch 2.11 needs query/key head size <= 256 and divisible by 8, not 1"


# -- cuDNN head sizes by torch and cuDNN version ------------------------------------------------
@pytest.mark.parametrize("cc,version,cudnn,d_qk,d_v,grad,why", [
    # from 2.13 (check_cudnn_tensor_shapes, check_cudnn_d256_bprop_head_dim)
    ((9, 0), "2.13.0", 92300, 256, 256, False, None), ((9, 0), "2.13.0", 92300, 256, 256, True, None),
    ((10, 0), "2.13.0", 92300, 32, 256, False, None), ((10, 3), "2.13.0", 92300, 256, 256, False, None),
    ((9, 0), "2.13.0", 92300, 264, 256, False, "cuDNN attention on sm90 with torch 2.13 needs query/key head size <= "
                                                 "256 and divisible by 8, not 264"),
    ((9, 0), "2.13.0", 92300, 128, 128, True, None), ((9, 0), "2.13.0", 92300, 192, 128, True, None),
    ((9, 0), "2.13.0", 92300, 128, 136, True,
     "cuDNN attention's backward on sm90 with torch 2.13 runs head sizes (<=128, <=128), (192, 128) or (256, 256), "
     "not (128, 136)"),
    ((9, 0), "2.13.0", 92300, 256, 128, True,
     "cuDNN attention's backward on sm90 with torch 2.13 runs head sizes (<=128, <=128), (192, 128) or (256, 256), "
     "not (256, 128)"),
    ((9, 0), "2.13.0", 92300, 192, 192, True,
     "cuDNN attention's backward on sm90 with torch 2.13 runs head sizes (<=128, <=128), (192, 128) or (256, 256), "
     "not (192, 192)"),
    ((9, 0), "2.13.0", 92200, 136, 136, False, "cuDNN attention on sm90 with torch 2.13 needs query/key head size <= "
                                                 "128 and divisible by 8, not 136"),
    ((9, 0), "2.13.0", 92200, 192, 128, True, None),  # (192, 128) from cuDNN 9.11
    ((10, 0), "2.13.0", 91100, 192, 128, False, None),
    ((9, 0), "2.13.0", 91099, 192, 128, False, "cuDNN attention on sm90 with torch 2.13 needs query/key head size <= "
                                                 "128 and divisible by 8, not 192"),
    ((9, 0), "2.13.0", 92200, 192, 136, False, "cuDNN attention on sm90 with torch 2.13 needs query/key head size <= "
                                                 "128 and divisible by 8, not 192"),
    ((9, 0), "2.13.0", 92200, 128, 192, False, "cuDNN attention on sm90 with torch 2.13 needs value head size <= "
                                                 "128 and divisible by 8, not 192"),
    ((8, 0), "2.13.0", 92300, 192, 128, False, "cuDNN attention on sm80 with torch 2.13 needs query/key head size <= "
                                                 "128 and divisible by 8, not 192"),
    ((12, 0), "2.13.0", 92300, 136, 136, True, "cuDNN attention on sm120 with torch 2.13 needs query/key head size <= "
                                                 "128 and divisible by 8, not 136"),
    ((8, 6), "2.13.0", 92300, 256, 128, True, "cuDNN attention on sm86 with torch 2.13 needs query/key head size <= "
                                                "128 and divisible by 8, not 256"),
    # 2.8 to 2.12: 256 on sm90, and on sm100 forward only, from cuDNN 9.5.1
    ((9, 0), "2.11.0", None, 32, 256, True, None), ((9, 0), "2.8.0", 90501, 256, 256, True, None),
    ((10, 0), "2.11.0", None, 256, 256, False, None),
    ((10, 0), "2.11.0", None, 256, 256, True, "cuDNN attention on sm100 with torch 2.11 needs query/key head size <= "
                                                "128 and divisible by 8, not 256"),
    ((9, 0), "2.8.0", 90500, 32, 256, False, "cuDNN attention on sm90 with torch 2.8 needs value head size <= 128 and "
                                               "divisible by 8, not 256"),
    ((8, 9), "2.11.0", None, 32, 256, False, "cuDNN attention on sm89 with torch 2.11 needs value head size <= 128 "
                                               "and divisible by 8, not 256"),
    ((9, 0), "2.11.0", None, 264, 264, False, "cuDNN attention on sm90 with torch 2.11 needs query/key head size <= "
                                                "256 and divisible by 8, not 264"),
    # before 2.8: 128 everywhere
    ((9, 0), "2.7.1", 92300, 32, 136, False, "cuDNN attention on sm90 with torch 2.7 needs value head size <= 128 "
                                               "and divisible by 8, not 136"),
    ((9, 0), "2.7.1", 92300, 128, 128, True, None),
    ((9, 0), "2.7.1", None, 8, 20, False, "cuDNN attention on sm90 with torch 2.7 needs value head size <= 128 and "
                                            "divisible by 8, not 20"),
])
def test_cudnn_head_sizes(cc, version, cudnn, d_qk, d_v, grad, why):
    caps = cuda(cc, version, cudnn)
    assert B.cudnn_head_dim_refusal(caps, d_qk, d_v, grad) == why
    assert B.refusal("cudnn", caps, call(q=(2, 4, 16, d_qk), v=(2, 4, 16, d_v), requires_grad=grad)) == why


def test_cudnn_head_sizes_follow_the_torch_the_caps_name():
    caps = DeviceCaps("cuda", (9, 0), torch_version="2.13.0", cudnn_version=92300)
    assert B.cudnn_head_dim_refusal(caps, 256, 128, True).startswith("cuDNN attention's backward on sm90 with "
                                                                      "torch 2.13 ")
    caps = DeviceCaps("cuda", (9, 0), torch_version="2.7.0", cudnn_version=92300)
    assert B.cudnn_head_dim_refusal(caps, 256, 256, False) == \
        "cuDNN attention on sm90 with torch 2.7 needs query/key head size <= 128 and divisible by 8, not 256"


def test_caps_that_name_no_torch_answer_for_the_running_one(monkeypatch):
    caps = DeviceCaps("cuda", (9, 0), cudnn_version=92300)
    monkeypatch.setattr(torch, "__version__", "2.7.0")
    assert "with torch 2.7 " in B.cudnn_head_dim_refusal(caps, 256, 256, False)


def test_alignment():
    assert [B._alignment(cuda(cc), dt) for cc in ((8, 0), (7, 0), (6, 1)) for dt in (F16, BF16, F32)] == \
        [8, 8, 4, 8, 8, 1, 1, 1, 1]


def test_dtype_names():
    assert B._name(torch.bfloat16) == "bfloat16"


# -- boundaries the first round of mutation testing found unpinned ---------------------------------
def test_a_head_size_of_zero_is_not_a_zero_length_sequence():
    """Only the sequence lengths must be nonzero (check_nonzero_sequence_lengths_dense); torch's CPU
    flash kernel runs a head size of 0 (checked on this torch: sdpa_kernel(FLASH_ATTENTION) returns
    a (2, 4, 16, 0) output)."""
    assert B.refusal("flash", CPU, call(F32, q=(2, 4, 16, 0))) is None


@pytest.mark.parametrize("backend,caps,why", [
    ("flash", SM80, "flash attention needs 4-D query/key/value"),
    ("efficient", SM80, "memory-efficient attention needs 4-D query/key/value"),
    ("cudnn", SM90, "cuDNN attention needs 4-D query/key/value"),
])
@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_any_one_of_query_key_value_not_4d(backend, caps, which, why):
    shapes = {"q": (2, 4, 16, 64), "k": (2, 4, 16, 64), "v": (2, 4, 16, 64)}
    shapes[which] = (8, 16, 64)
    assert B.refusal(backend, caps, call(**shapes)) == why


@pytest.mark.parametrize("backend,caps", [("flash", SM80), ("efficient", SM80)])
def test_gqa_needs_key_and_value_heads_equal_on_flash_and_efficient(backend, caps):
    """check_batch_size_and_num_heads_dense<supports_gqa, requires_same_num_heads=true>; cuDNN's
    template argument is false (key and value heads may differ, tested above)."""
    c = call(q=(2, 4, 16, 64), k=(2, 2, 16, 64), v=(2, 4, 16, 64), enable_gqa=True)
    assert B.refusal(backend, caps, c) == "grouped-query attention needs key and value with the same number of heads"


def test_efficient_does_not_ignore_a_singleton_head_dim():
    """check_last_dim_stride_equals_1_dense<false> for the memory-efficient kernel (flash and cuDNN
    pass true); fp32 on sm75 aligns head sizes to 1, so a head size of 1 gets to the stride check."""
    c = call(F32, q=(2, 4, 16, 1), v=(2, 4, 16, 8), last_strides=(2, 1, 1))
    assert B.refusal("efficient", SM75, c) == "fused kernels need stride 1 in the head dim (got 2, 1, 1)"
    assert B.refusal("flash", SM80, call(q=(2, 4, 16, 1), last_strides=(2, 1, 1))) is None


def test_efficient_runs_a_head_size_of_one_where_the_alignment_is_one():
    assert B.refusal("efficient", SM60, call(q=(2, 4, 16, 1), v=(2, 4, 16, 1))) is None


@pytest.mark.parametrize("d,ok", [(192, True), (193, False), (224, False), (225, True), (256, True)])
def test_flash_backward_on_sm86_at_the_edges(d, ok):
    """(192, 224] refused with grad on sm86-sm89: 193 and 224 refused, 192 and 225 run."""
    why = B.refusal("flash", SM86, call(q=(2, 4, 16, d), requires_grad=True))
    assert (why is None) is ok, why


def test_cudnn_runs_dropout_one_and_only_sixteenths():
    caps = cuda((9, 0), "2.12.0")
    assert B.refusal("cudnn", caps, call(dropout=1.0)) is None  # 16 x 1.0 is whole
    assert B.refusal("cudnn", caps, call(dropout=0.9375)) is None
    assert B.refusal("cudnn", caps, call(dropout=0.95)) == \
        "cuDNN attention needs a dropout probability that is a multiple of 1/16"


def test_cudnn_d256_from_9_22_1():
    """`cudnn_version > 92200` (9.22.00): 9.22.01 has the d=256 kernels, 9.22.00 does not."""
    assert B.cudnn_head_dim_refusal(cuda((9, 0), "2.13.0", 92201), 256, 256, False) is None
    assert B.cudnn_head_dim_refusal(cuda((9, 0), "2.13.0", 92200), 256, 256, False) == \
        "cuDNN attention on sm90 with torch 2.13 needs query/key head size <= 128 and divisible by 8, not 256"


def test_cudnn_backward_refusal_names_the_head_sizes_just_above_128():
    assert B.cudnn_head_dim_refusal(cuda((9, 0), "2.13.0", 92300), 129, 64, True) == \
        ("cuDNN attention's backward on sm90 with torch 2.13 runs head sizes (<=128, <=128), (192, 128) or "
         "(256, 256), not (129, 64)")


def test_a_torch_without_cudnn_attention(monkeypatch):
    monkeypatch.setattr(torch.nn.attention, "SDPBackend", type("SDPBackend", (), {}))
    assert B.refusal("cudnn", SM90, call()) == "this torch has no cuDNN attention backend"


def test_defaults_are_a_forward_call():
    """Without requires_grad the call is a forward one: on sm86 flash runs head size 200 forward
    only, so the backward picks memory-efficient attention."""
    assert B.select(SM86, F16, 200, 200) == "flash"
    assert B.select(SM86, F16, 200, 200, True) == "efficient"
    assert B.unsupported_reason("flash", SM86, F16, 200, 200) is None
    assert Call.heads(F16, 8, 8).requires_grad is False
    q = torch.empty(1, 2, 3, 8)
    assert Call.of(q, q, q) == Call(F32, (1, 2, 3, 8), (1, 2, 3, 8), (1, 2, 3, 8))


def test_the_mask_stride_is_its_last_dims():
    mask = torch.zeros(2, 3, 5, 1).expand(2, 3, 5, 7)  # strides (15, 5, 1, 0)
    q = torch.empty(2, 3, 5, 8)
    assert Call.of(q, q, q, mask).mask_last_stride == 0
