"""engine/layouts.py against real CPU convolutions: the layout the simulation gives a meta
convolution's outputs is the layout torch's CPU kernels give them (both decide from
`suggest_memory_format()` of input and weight, Convolution.cpp), for inputs in every order of
their dimensions, dense or not, with size-1 dimensions; and the copies the CUDA kernels make
are the inputs not already in that layout (tests written against surviving mutants)."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from sa_profiler.engine.layouts import ChainedRules, LayoutRules, conv_format, suggests_channels_last

aten = torch.ops.aten
CL = {4: torch.channels_last, 5: torch.channels_last_3d}


def _meta(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


def _layouts(shape):
    """A tensor of `shape` stored in every order of its dimensions (batch first for 5-D), dense
    and with every other element of the innermost stored dimension, and one with C expanded."""
    n = len(shape)
    g = torch.Generator().manual_seed(0)
    for perm in itertools.permutations(range(n)):
        if n == 5 and perm[0] != 0:
            continue
        back = [perm.index(i) for i in range(n)]
        yield f"{perm}", torch.randn([shape[p] for p in perm], generator=g).permute(back)
        wide = torch.randn([shape[p] * (2 if j == n - 1 else 1) for j, p in enumerate(perm)], generator=g)
        yield f"{perm}-every-other", wide[(slice(None),) * (n - 1) + (slice(None, None, 2),)].permute(back)
    yield "C expanded", torch.randn((shape[0], 1) + shape[2:], generator=g).expand(shape)


def _weights(shape, k=1):
    n = len(shape)
    w = torch.randn((4, shape[1]) + (k,) * (n - 2))
    return [("weight contiguous", w), ("weight channels-last", w.contiguous(memory_format=CL[n]))]


def _args(x, w):
    d = x.dim() - 2
    return (x, w, None, [1] * d, [0] * d, [1] * d, False, [0] * d, 1)


def _big(t: torch.Tensor):
    """Strides of the dimensions that hold more than one element (the others' are arbitrary)."""
    return tuple(s for s, n in zip(t.stride(), t.shape) if n > 1)


SHAPES_2D = [(2, 3, 4, 5), (2, 1, 4, 5), (1, 3, 4, 5), (2, 3, 1, 5), (2, 3, 4, 1), (2, 3, 1, 1), (1, 1, 4, 5)]
SHAPES_3D = [(2, 3, 2, 3, 4), (2, 1, 2, 3, 4), (2, 3, 2, 1, 4), (1, 3, 2, 3, 4), (2, 3, 1, 1, 1)]


def _suggested(t: torch.Tensor):
    """torch's own `suggest_memory_format()`: CPU max pooling gives its output that format."""
    out = (F.max_pool2d if t.dim() == 4 else F.max_pool3d)(t, 1)
    return CL[t.dim()] if out.stride() == torch.empty(t.shape, memory_format=CL[t.dim()]).stride() \
        != torch.empty(t.shape).stride() else torch.contiguous_format


@pytest.mark.parametrize("shape", SHAPES_2D + SHAPES_3D, ids=str)
def test_suggests_channels_last_is_torchs(shape):
    for name, x in _layouts(shape):
        out = (F.max_pool2d if x.dim() == 4 else F.max_pool3d)(x, 1)
        fmt = CL[x.dim()] if suggests_channels_last(x) else torch.contiguous_format
        assert out.stride() == torch.empty(x.shape, memory_format=fmt).stride(), (name, x.stride())


@pytest.mark.parametrize("shape", SHAPES_2D, ids=str)
def test_convolution_output_layout_is_the_cpu_kernels(shape):
    """On the CPU, 2-D convolutions (mkldnn and thnn alike) take channels-last when input or
    weight suggests it, as cuDNN does."""
    rules = LayoutRules()
    for (name, x), (wname, w) in itertools.product(_layouts(shape), _weights(shape)):
        real = aten.convolution.default(*_args(x, w))
        margs = _args(_meta(x), _meta(w))
        meta_out = aten.convolution.default(*margs)
        fixed = rules.restride(aten.convolution.default, margs, meta_out)
        assert fixed.device.type == "meta" and fixed.shape == real.shape
        assert _big(fixed) == _big(real), (name, wname, x.stride())
        if meta_out.is_contiguous(memory_format=conv_format(x, w)):
            assert fixed is meta_out  # already in the kernel's layout: left alone
        # conv_format names the same layout, to the strides of size-1 dimensions
        assert real.stride() == torch.empty(real.shape, memory_format=conv_format(x, w)).stride(), (name, wname)


@pytest.mark.parametrize("shape", SHAPES_3D, ids=str)
def test_3d_convolution_output_layout(shape):
    """3-D: channels-last-3d when input or weight suggests it (torch's suggest_memory_format, read
    from max pooling; the CPU's own 3-D convolution is not a reference: without mkldnn it
    returns contiguous outputs)."""
    rules = LayoutRules()
    for (name, x), (wname, w) in itertools.product(_layouts(shape), _weights(shape)):
        margs = _args(_meta(x), _meta(w))
        meta_out = aten.convolution.default(*margs)
        either = CL[5] in (_suggested(x), _suggested(w))
        expected = torch.empty(meta_out.shape, memory_format=CL[5] if either else torch.contiguous_format)
        assert _big(rules.restride(aten.convolution.default, margs, meta_out)) == _big(expected), (name, wname)
        assert _big(torch.empty(meta_out.shape, memory_format=conv_format(x, w))) == _big(expected), (name, wname)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 3, 4, 5)], ids=str)
def test_convolution_backward_layouts_are_the_cpu_kernels(shape):
    rules = LayoutRules()
    n = len(shape)
    keep = {"(0, 1, 2, 3)", "(0, 2, 3, 1)", "(0, 2, 3, 1)-every-other", "(1, 0, 2, 3)", "(0, 1, 3, 2)-every-other",
            "(3, 2, 1, 0)", "(0, 1, 2, 3, 4)", "(0, 2, 3, 4, 1)", "(0, 2, 3, 4, 1)-every-other", "C expanded"}
    layouts = [(name, x) for name, x in _layouts(shape) if name in keep]  # the backward is slow on the CPU
    for (name, x), (wname, w) in itertools.product(layouts, _weights(shape, 2)):  # 2x2: a weight layout shows
        args = _args(x, w)
        g = torch.randn(aten.convolution.default(*args).shape)
        fmt = conv_format(x, w)
        for gname, grad in [("grad contiguous", g), ("grad channels-last", g.contiguous(memory_format=CL[n]))]:
            for mask in ([True, True, True], [False, True, False], [True, False, False]):
                bw = (grad, x, w, [4], *args[3:], mask)
                real = aten.convolution_backward.default(*bw)
                mbw = (_meta(grad), _meta(x), _meta(w), [4], *args[3:], mask)
                # this torch's meta kernel, and a contiguous one (as older torch's meta kernels give)
                ours = aten.convolution_backward.default(*mbw)
                plain = tuple(None if t is None else torch.empty(t.shape, device="meta") for t in ours)
                for meta_out in (ours, plain):
                    fixed = rules.restride(aten.convolution_backward.default, mbw, meta_out)
                    for i in range(3):
                        if real[i] is None:
                            assert fixed[i] is None
                        else:
                            assert _big(fixed[i]) == _big(real[i]), (i, name, wname, gname, mask)
                            assert fixed[i].device.type == "meta" and fixed[i].shape == real[i].shape
                            if meta_out[i].is_contiguous(memory_format=fmt):
                                assert fixed[i] is meta_out[i]  # already in the kernel's layout: left alone
                    assert fixed[2] is meta_out[2]  # grad_bias has no layout


def test_restrided_outputs_keep_their_dtype():
    rules = LayoutRules()
    x = _meta(torch.empty(2, 3, 4, 5, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last))
    w = _meta(torch.empty(4, 3, 1, 1, dtype=torch.bfloat16))
    margs = _args(x, w)
    fixed = rules.restride(aten.convolution.default, margs, aten.convolution.default(*margs))
    assert fixed.dtype == torch.bfloat16 and fixed.is_contiguous(memory_format=torch.channels_last)
    g = torch.empty(2, 4, 4, 5, dtype=torch.bfloat16, device="meta")
    outs = (torch.empty(2, 3, 4, 5, dtype=torch.bfloat16, device="meta"),
            torch.empty(4, 3, 1, 1, dtype=torch.bfloat16, device="meta"), None)
    gi, gw, gb = rules.restride(aten.convolution_backward.default, (g, x, w, [4], *margs[3:], [True, True, False]),
                                outs)
    assert gi.dtype == gw.dtype == torch.bfloat16 and gb is None
    assert gi.is_contiguous(memory_format=torch.channels_last) and not gi.is_contiguous()


@pytest.mark.parametrize("dims", [4, 5])
def test_overlapping_strides_suggest_as_torch_says(dims):
    """Every stride tuple from {0, 1, 2, 3, 4, 5, 8, 16, 32} (4-D) or without 3 and 5 (5-D) over a tensor with
    every dimension of size 2 (views of one buffer, overlapping): suggests_channels_last agrees
    with torch's suggest_memory_format, read from CPU max pooling."""
    base = torch.randn(256)
    shape = (2,) * dims
    values = (0, 1, 2, 3, 4, 5, 8, 16, 32) if dims == 4 else (0, 1, 2, 4, 8, 16, 32)
    said = []
    for strides in itertools.product(values, repeat=dims):
        t = base.as_strided(shape, strides)
        said.append(suggests_channels_last(t))
        assert (_suggested(t) is CL[dims]) == said[-1], strides
    assert 0 < sum(said) < len(said) / 2


def test_float64_and_1d_convolutions_stay_contiguous():
    """cuDNN never takes channels-last for float64 (Convolution.cpp), and a 3-D weight has no
    channels-last format."""
    x = torch.empty(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    w = torch.empty(4, 3, 1, 1).contiguous(memory_format=torch.channels_last)
    assert conv_format(x, w) is torch.channels_last
    assert conv_format(x.double(), w.double()) is torch.contiguous_format
    assert conv_format(x.double(), w) is torch.contiguous_format
    assert conv_format(x, w.double()) is torch.contiguous_format
    assert conv_format(torch.empty(2, 3, 5), torch.empty(4, 3, 1)) is torch.contiguous_format
    x5 = torch.empty(2, 3, 2, 4, 5).contiguous(memory_format=torch.channels_last_3d)
    assert conv_format(x5, torch.empty(4, 3, 1, 1, 1)) is torch.channels_last_3d
    assert conv_format(x5.double(), torch.empty(4, 3, 1, 1, 1, dtype=torch.float64)) is torch.contiguous_format


def test_suggests_channels_last_only_for_4d_and_5d():
    assert suggests_channels_last(torch.empty(2, 3, 4, 5).contiguous(memory_format=torch.channels_last))
    assert suggests_channels_last(torch.empty(2, 3, 2, 4, 5).contiguous(memory_format=torch.channels_last_3d))
    assert not suggests_channels_last(torch.empty(2, 3, 4, 5))
    assert not suggests_channels_last(torch.empty(2, 3, 2, 4, 5))
    # 3-D and 6-D tensors whose strides decrease from a middle dimension: no channels-last format
    assert not suggests_channels_last(torch.empty(2, 5, 3).permute(0, 2, 1))
    assert not suggests_channels_last(torch.empty(2, 4, 5, 6, 7, 3).permute(0, 5, 1, 2, 3, 4))
    assert not suggests_channels_last(torch.empty(2, 3, 4, 5, 6, 7))
    # the size-1 corner cases of is_channels_last_strides_2d_s4
    assert not suggests_channels_last(torch.empty(0, 3, 4, 5).contiguous(memory_format=torch.channels_last))
    assert not suggests_channels_last(torch.empty(2, 3, 1, 1).expand(2, 3, 4, 5))


def test_real_cpu_tensors_are_never_restrided():
    """On the CPU the kernels already give the outputs their layout: the rule leaves them alone."""
    rules = LayoutRules()
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 3, 1, 1)
    out = torch.empty(2, 4, 4, 5)  # contiguous, as a meta kernel would give
    assert rules.restride(aten.convolution.default, _args(x, w), out) is out
    outs = (torch.empty(2, 3, 4, 5), torch.empty(4, 3, 1, 1), torch.empty(4))
    assert rules.restride(aten.convolution_backward.default, (out, x, w, [4], *_args(x, w)[3:], [True] * 3),
                          outs) is outs
    other = torch.empty(3, 3, device="meta")
    assert rules.restride(aten.mm.default, (other, other), other) is other


def _copies(rules, func, args):
    return [(c[0], c[1], c[2], c[3]) for c in rules.transients(func, args, {}, None)]


def test_cuda_copies_are_the_inputs_not_in_the_layout():
    """Convolution.cpp makes input and weight contiguous in the backend's format: one copy of
    each that is not, numel x itemsize bytes."""
    rules = LayoutRules()
    x = _meta(torch.empty(2, 3, 4, 5).contiguous(memory_format=torch.channels_last))
    w = _meta(torch.empty(8, 3, 3, 3, dtype=torch.float32))
    fwd = _args(x, w)
    assert _copies(rules, aten.convolution.default, fwd) == [
        (8 * 3 * 3 * 3 * 4, (8, 3, 3, 3), "float32",
         "weight made contiguous in the backend's memory format inside convolution")]
    xc = _meta(torch.empty(2, 3, 4, 5, dtype=torch.bfloat16))
    wc = _meta(torch.empty(8, 3, 3, 3, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last))
    assert _copies(rules, aten.convolution.default, _args(xc, wc)) == [
        (2 * 3 * 4 * 5 * 2, (2, 3, 4, 5), "bfloat16",
         "input made contiguous in the backend's memory format inside convolution")]
    # both already channels-last, or both contiguous: no copy
    assert _copies(rules, aten.convolution.default, _args(x, _meta(torch.empty(8, 3, 3, 3).contiguous(
        memory_format=torch.channels_last)))) == []
    assert _copies(rules, aten.convolution.default, _args(_meta(torch.empty(2, 3, 4, 5)), w)) == []
    # a contiguous-format convolution copies a non-dense input (sliced)
    sliced = _meta(torch.empty(2, 3, 4, 10)[..., ::2])
    assert _copies(rules, aten.convolution.default, _args(sliced, w)) == [
        (2 * 3 * 4 * 5 * 4, (2, 3, 4, 5), "float32",
         "input made contiguous in the backend's memory format inside convolution")]


def test_cuda_backward_copies():
    rules = LayoutRules()
    x = _meta(torch.empty(2, 3, 4, 5).contiguous(memory_format=torch.channels_last))
    w = _meta(torch.empty(8, 3, 3, 3))
    g = _meta(torch.empty(2, 8, 2, 3))  # contiguous grad_output
    rest = _args(x, w)[3:]
    assert _copies(rules, aten.convolution_backward.default, (g, x, w, [8], *rest, [True] * 3)) == [
        (2 * 8 * 2 * 3 * 4, (2, 8, 2, 3), "float32",
         "grad_output made contiguous in the backend's memory format inside convolution_backward"),
        (8 * 3 * 3 * 3 * 4, (8, 3, 3, 3), "float32",
         "weight made contiguous in the backend's memory format inside convolution_backward")]
    # contiguous format: the backward copies nothing, even a non-dense grad_output
    xc = _meta(torch.empty(2, 3, 4, 5))
    gs = _meta(torch.empty(2, 8, 2, 6)[..., ::2])
    assert _copies(rules, aten.convolution_backward.default, (gs, xc, w, [8], *rest, [True] * 3)) == []
    # the input and weight of the backward decide the format, not grad_output
    gcl = _meta(torch.empty(2, 8, 2, 3).contiguous(memory_format=torch.channels_last))
    assert [c[3].split()[0] for c in rules.transients(
        aten.convolution_backward.default, (gcl, xc, w, [8], *rest, [True] * 3), {}, None)] == []
    wcl = _meta(torch.empty(8, 3, 3, 3).contiguous(memory_format=torch.channels_last))
    assert [c[3].split()[0] for c in rules.transients(
        aten.convolution_backward.default, (g, xc, wcl, [8], *rest, [True] * 3), {}, None)] == ["grad_output", "input"]


def test_no_copies_on_the_cpu_or_for_real_tensors_or_other_ops():
    x = torch.empty(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    w = torch.empty(8, 3, 3, 3)
    assert LayoutRules().cuda is True
    assert LayoutRules(cuda=False).transients(aten.convolution.default, _args(_meta(x), _meta(w)), {}, None) == []
    assert len(LayoutRules().transients(aten.convolution.default, _args(_meta(x), _meta(w)), {}, None)) == 1
    assert LayoutRules().transients(aten.convolution.default, _args(x, w), {}, None) == []
    g = torch.empty(2, 8, 2, 3)
    assert LayoutRules().transients(aten.convolution_backward.default, (g, x, w, [8], *_args(x, w)[3:], [True] * 3),
                                    {}, None) == []
    m = _meta(torch.empty(3, 3))
    assert LayoutRules().transients(aten.mm.default, (m, m), {}, None) == []
    assert LayoutRules().untracked_outputs(aten.convolution.default, _args(x, w), None) == ()


class _Echo:
    """A rule set that reports what it was given."""

    def __init__(self, tag, untracked=(), **attrs):
        self.tag, self.untracked = tag, untracked
        self.ops = frozenset({f"{tag}_op"})
        self.__dict__.update(attrs)

    def restride(self, func, args, out):
        return out + [self.tag]

    def untracked_outputs(self, func, args, outputs):
        return tuple(i for i in self.untracked if outputs is not None)

    def transients(self, func, args, kwargs, outputs):
        return [(self.tag, func, args, kwargs, outputs)]


def test_chained_rules_pass_everything_to_each_in_order():
    a, b = _Echo("a", (2, 0), gpu="first"), _Echo("b", (0, 1), gpu="second", only_b=3)
    rules = ChainedRules(a, None, b)
    assert rules.rules == [a, b]
    assert rules.restride("f", (), []) == ["a", "b"]
    assert rules.untracked_outputs("f", (), ["out"]) == (0, 1, 2)
    assert rules.transients("f", ("x",), {"k": 1}, ["out"]) == [("a", "f", ("x",), {"k": 1}, ["out"]),
                                                                ("b", "f", ("x",), {"k": 1}, ["out"])]
    assert rules.gpu == "first" and rules.only_b == 3
    assert rules.ops == {"a_op", "b_op"} and ChainedRules().ops == frozenset()
    with pytest.raises(AttributeError, match="^missing$"):
        rules.missing
    assert ChainedRules().untracked_outputs("f", (), []) == () and ChainedRules().transients("f", (), {}, []) == []
