"""The time a step takes on a GPU: a calibrated cost per op.

Every aten op the simulator sees is one of a few kinds (a view, a GEMM by precision, a fused
attention kernel by backend, direction and precision, a softmax, a pointwise or reduction op),
and costs

    launch + max(flops / (efficiency[kind] * peak(dtype)), bytes / (bandwidth_efficiency[kind] * bandwidth))

where `launch` is the host-side cost of dispatching the op and launching its kernel, by family
of op and direction (the autograd engine's backward ops cost less host time than the Python
forward; a view launches no kernel but is still dispatched). A step adds a fixed `step` cost (by mode), and the host-side
work of the layer's Python code that no dispatch mode sees (`host_calls`). The
efficiencies are the fractions of the card's datasheet peak that the kernels achieved on an
H100; on other cards the same fractions are applied to that card's peak rates and bandwidth,
which no measurement has checked. The constants are fitted by `python -m sa_profiler.validation.timing_fit`
and live in `timing_constants.py` with the data and figures of their held-out check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sa_profiler import torch_compat
from sa_profiler.engine import meta_memo
from sa_profiler.engine import timing_constants as fitted
from sa_profiler.engine.tracker import tensors_in

# ops that create no kernel: views, aliases and uninitialised allocations
NO_KERNEL = {"_unsafe_view", "_reshape_alias", "empty", "empty_like", "empty_strided", "new_empty",
             "new_empty_strided", "lift_fresh", "detach", "alias", "view", "t", "transpose", "permute", "expand",
             "unsqueeze", "squeeze", "slice", "select", "as_strided", "unbind", "split", "chunk", "narrow"}
GEMM = {"mm", "bmm", "addmm", "baddbmm", "addbmm", "convolution", "_convolution", "convolution_backward"}
SOFTMAX = {"_softmax", "_softmax_backward_data", "_safe_softmax", "_log_softmax", "_log_softmax_backward_data"}
ATTENTION = {
    "_scaled_dot_product_efficient_attention": "efficient forward",
    "_scaled_dot_product_efficient_attention_backward": "efficient backward",
    "_efficient_attention_forward": "efficient forward",
    "_efficient_attention_backward": "efficient backward",
    "_scaled_dot_product_flash_attention": "flash forward",
    "_scaled_dot_product_flash_attention_backward": "flash backward",
    "_flash_attention_forward": "flash forward",
    "_flash_attention_backward": "flash backward",
    "_scaled_dot_product_cudnn_attention": "cudnn forward",
    "_scaled_dot_product_cudnn_attention_backward": "cudnn backward",
}
PRECISION = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}


@dataclass(frozen=True)
class Op:
    """One dispatched op, as the time model sees it."""

    kind: str  # "view", "gemm fp16", "efficient backward half", "softmax", "pointwise", ...
    precision: str  # fp16, bf16, fp32, fp64: which peak rate applies
    flops: int
    bytes: int
    backward: bool = False  # dispatched by the autograd engine (host costs differ)

    @property
    def launch_group(self) -> str:
        """Which host cost applies: by direction and family of op."""
        family = self.kind.split(" ")[0]
        family = "attention" if family in ("efficient", "flash", "cudnn") else family
        return f"{'backward' if self.backward else 'forward'} {family}"


def kind_of(name: str, precision: str) -> str:
    if name in NO_KERNEL:
        return "view"
    if name in GEMM:
        return f"gemm {'fp32' if precision == 'fp64' else precision}"
    if name in ATTENTION:
        return f"{ATTENTION[name]} {'fp32' if precision in ('fp32', 'fp64') else 'half'}"
    if name in SOFTMAX:
        return "softmax"
    return "pointwise"


def _in_backward() -> bool:
    """Whether the autograd engine is running the op (`torch_compat.graph_task_id` is -1
    outside a backward; it is what torch.utils.checkpoint uses)."""
    task = torch_compat.graph_task_id()
    return task is not None and task >= 0


def describe(func, args, kwargs, out) -> Op:
    """The kind, FLOPs (torch's own flop formulas) and bytes read and written of one op."""
    from torch.utils.flop_counter import flop_registry

    name = func.overloadpacket.__name__
    inputs = tensors_in(args) + tensors_in(kwargs)
    outputs = tensors_in(out)
    ref = inputs[0] if name in GEMM or name in ATTENTION else (outputs or inputs or [None])[0]
    precision = PRECISION.get(ref.dtype, "fp32") if ref is not None else "fp32"
    kind = kind_of(name, precision)
    if kind == "view":
        return Op(kind, precision, 0, 0, _in_backward())
    flops = 0
    fn = flop_registry.get(func.overloadpacket)
    if fn is not None:
        try:
            flops = int(fn(*args, **kwargs, out_val=out))
        except Exception:  # a flop formula that does not accept these arguments
            flops = 0
    moved = sum(t.numel() * t.element_size() for t in inputs + outputs)
    return Op(kind, precision, flops, moved, _in_backward())


@dataclass(frozen=True)
class Constants:
    """Fitted per-op costs (see the module docstring)."""

    launch_s: dict[str, float]  # Op.launch_group -> host and launch cost per op
    step_s: dict[str, float]  # by mode: forward, train
    host_s: dict[str, float]  # per host call (`host_calls`)
    efficiency: dict[str, float]  # kind -> fraction of the peak FLOP rate
    bandwidth_efficiency: dict[str, float]  # kind -> fraction of the memory bandwidth ("*" for the rest)

    @classmethod
    def fitted(cls) -> "Constants":
        return cls(dict(fitted.LAUNCH_S), dict(fitted.STEP_S), dict(fitted.HOST_S), dict(fitted.EFFICIENCY),
                   dict(fitted.BANDWIDTH_EFFICIENCY))

    def bandwidth_share(self, kind: str) -> float:
        group = kind if kind in self.bandwidth_efficiency else "*"
        return self.bandwidth_efficiency[group]

    def flop_share(self, kind: str) -> float:
        """The kind's fitted efficiency; for a kind no measurement had (another dtype of a
        kernel), the lowest of its family's, or of all (an estimate that errs slow)."""
        if kind in self.efficiency:
            return self.efficiency[kind]
        family = [v for k, v in self.efficiency.items() if k.split(" ")[0] == kind.split(" ")[0]]
        return min(family or self.efficiency.values() or [1.0])


def peak_flops(gpu, precision: str) -> float:
    return gpu.fp32_flops if precision in ("fp32", "fp64") else gpu.fp16_flops


def op_seconds(op: Op, gpu, c: Constants) -> float:
    launch = c.launch_s.get(op.launch_group, 0.0)
    if op.kind == "view":
        return launch
    compute = op.flops / (c.flop_share(op.kind) * peak_flops(gpu, op.precision)) if op.flops else 0.0
    memory = op.bytes / (c.bandwidth_share(op.kind) * gpu.bandwidth)
    return launch + max(compute, memory)


def host_calls(w) -> dict[str, int]:
    """Host-side work per step that the dispatched ops do not show: a forced SDPA backend enters
    `torch.nn.attention.sdpa_kernel` (and a warnings filter) around each call; a checkpointed
    chunk in training (`torch.utils.checkpoint`, non-reentrant) installs saved-tensor hooks in
    the forward and re-runs its Python function in the backward."""
    opts = dict(w.options)
    out = {}
    if w.impl == "sdpa" and opts.get("backend", "auto") != "auto":
        out["forced sdpa backend"] = 1
    if w.impl == "chunked" and opts.get("checkpoint") and w.mode == "train":
        out["checkpointed chunk"] = -(-w.tokens // int(opts.get("chunk", 1024)))
    return out


def step_seconds(ops: list[Op], w, gpu, c: Constants | None = None) -> float:
    """The estimated time of one step of workload `w` whose dispatched ops are `ops`."""
    c = c or Constants.fitted()
    host = sum(n * c.host_s.get(what, 0.0) for what, n in host_calls(w).items())
    return c.step_s.get(w.mode, 0.0) + host + sum(op_seconds(op, gpu, c) for op in ops)


def ops_seconds(ops: list[Op], mode: str, gpu, c: Constants | None = None) -> float:
    """The per-step cost of `mode` (forward, train) and each op's: `step_seconds` less the host
    calls that only a layer's Workload names (`host_calls`)."""
    c = c or Constants.fitted()
    return c.step_s.get(mode, 0.0) + sum(op_seconds(op, gpu, c) for op in ops)


@dataclass
class StepTimer:
    """Collects the ops of one step (the tracker calls `add` for each) and estimates its time.
    The runner calls `start_step` before each step it runs, so of several steps (a whole model's
    two, the second with the optimizer's state) `ops` holds the last one's: the steady state."""

    gpu: object
    ops: list[Op] = field(default_factory=list)

    def add(self, func, args, kwargs, out, key=None) -> None:
        """`key`: the inputs' `meta_memo.inputs_key`, if the caller has it."""
        self.ops.append(_described(func, args, kwargs, out, key))

    def start_step(self) -> None:
        """A step begins: the ops of any step before it are dropped."""
        self.ops.clear()

    def seconds(self, w, c: Constants | None = None) -> float:
        """A layer's step (`w`: its Workload, whose host calls count too)."""
        return step_seconds(self.ops, w, self.gpu, c)

    def total(self, mode: str = "train", c: Constants | None = None) -> float:
        """A whole model's step, which has no Workload: the fitted per-step cost of `mode` and
        every op of the last step (forward, loss, backward, a grad scaler's unscale, optimizer).
        Host work no dispatched op shows (`host_calls`: a forced SDPA backend, a checkpointed
        chunk's Python re-run) is not counted, so a checkpointed conversion errs fast."""
        return ops_seconds(self.ops, mode, self.gpu, c)


_descriptions: dict = {}
_views: dict = {}


def _described(func, args, kwargs, out, key=None) -> Op:
    """`describe`, kept per op, input and output layouts and direction on meta tensors (a
    description reads only those; meta_memo.py makes the key)."""
    outs = [out] if isinstance(out, torch.Tensor) else tensors_in(out)
    if outs and func.overloadpacket.__name__ in NO_KERNEL:  # no kernel: `describe`'s view, by precision alone
        key = (PRECISION.get(outs[0].dtype, "fp32"), _in_backward())
        op = _views.get(key)
        if op is None:
            op = _views[key] = Op("view", key[0], 0, 0, key[1])
        return op
    if not meta_memo.enabled() or meta_memo.mutates(func):  # a mutated input's layout is read after the op
        return describe(func, args, kwargs, out)
    key = key if key is not None else meta_memo.inputs_key(args, kwargs)
    out_key = meta_memo.layout_key(out) if key is not None else None
    if out_key is None:
        return describe(func, args, kwargs, out)
    key = (func, key, out_key, _in_backward())
    op = _descriptions.get(key)
    if op is None:
        if len(_descriptions) >= meta_memo.LIMIT:
            _descriptions.clear()
        op = _descriptions[key] = describe(func, args, kwargs, out)
    return op


def method(gpu) -> str:
    """How a simulated time was obtained (a record's `time_method`), with its typical error."""
    where = "" if _is_fitted_card(gpu) else f", scaled to {gpu.name} by its peak rates and bandwidth (unmeasured)"
    return (f"estimate: per-op model fitted on {fitted.CARD} measurements{where}; typical error "
            f"x{typical_factor():.2f} on held-out {fitted.CARD} workloads")


def assumption(gpu) -> str:
    """The time model in one sentence, for a report's assumptions."""
    h = fitted.HELDOUT
    text = (f"times are estimates: per-op efficiencies and launch costs fitted on {fitted.CARD} measurements "
            f"(python -m sa_profiler.validation.timing_fit); on {h['rows']} held-out workloads measured / estimated has a "
            f"median of {h['median_ratio']:.2f} and a typical error of x{typical_factor():.2f} "
            f"(x{h['p90_factor']:.2f} at the 90th percentile)")
    if not _is_fitted_card(gpu):
        text += f"; on {gpu.name} they are scaled by its peak rates and bandwidth, which no measurement has checked"
    return text


def _is_fitted_card(gpu) -> bool:
    return gpu is not None and gpu.name == fitted.CARD


def typical_factor() -> float:
    """The held-out check's median of max(measured / estimated, estimated / measured)."""
    return float(fitted.HELDOUT["typical_factor"])
