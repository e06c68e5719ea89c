"""Will this whole model train on that GPU at that batch? One training step, simulated.

The model is built on the meta device (`with torch.device("meta")`: no real memory), then two
steady-state training steps run under the memory tracker: forward, a scalar loss, backward,
optimizer step (the real torch optimizer, so its state is created as in training; on a CUDA
target with the foreach implementation torch uses there). The peak is classified: parameters
and buffers, input, gradients, optimizer state, activations (kept from the forward),
temporaries; and attributed to top-level modules and to the SAGAN attention layers. Each
efficient implementation is then swapped in (`convert`) and simulated again.

AMP (`amp="fp16"|"bf16"`) is emulated with CUDA autocast's casting policy: matmul-like ops run
in the low precision (casts of leaf weights cached for the step, as autocast does), softmax,
normalisation, losses and pointwise transcendental ops in float32. A GradScaler scales the loss.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from . import gpus
from .attention import backends, convert, is_sagan_attention
from .engine.allocator import CudaCachingAllocator, ExactAllocator, SimulatedOOM
from .engine.rules import CudaRules
from .engine.tracker import MemoryTracker, tensors_in
from .engine.workload import TensorInfo

OPTIMIZERS = ("sgd", "sgd-momentum", "adam", "adamw")
CATEGORIES = ("parameters", "input", "gradients", "optimizer state", "activations", "temporary")
CONVERSIONS = (("sdpa", {}), ("chunked", {"chunk": 1024, "checkpoint": True}))


class FitError(ValueError):
    """A model, input or option that cannot be used (one line for the user)."""


# -- loading ------------------------------------------------------------------------------
def load(spec: str, args: dict | None = None) -> Callable[[], nn.Module]:
    """`FILE.py:NAME` or `module:NAME` -> a zero-argument factory of the model."""
    if ":" not in spec:
        raise FitError(f"cannot read model {spec!r}: expected FILE.py:NAME or module:NAME")
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise FitError(f"no such file: {where!r} (from model {spec!r})")
        mod_name = f"sa_profiler_user_{abs(hash(str(path.resolve())))}"
        loader = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules[mod_name] = module
        try:
            loader.loader.exec_module(module)
        except Exception as err:
            raise FitError(f"importing {where!r} failed: {type(err).__name__}: {_one_line(err)}") from None
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as err:
            raise FitError(f"no module {where!r} (from model {spec!r}): {_one_line(err)}") from None
    obj = getattr(module, name, None)
    if obj is None:
        raise FitError(f"{where!r} has no {name!r}; expected an nn.Module class or a factory function")
    if not callable(obj):
        raise FitError(f"{spec!r} is not callable; expected an nn.Module class or a factory function")
    return lambda: obj(**(args or {}))


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def parse_input(text: str) -> tuple[int, ...]:
    """`128` (a latent vector) or `3x224x224` (an image)."""
    parts = str(text).lower().replace(",", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise FitError(f"cannot read --input {text!r}: expected a vector size such as 128 or an image CxHxW such as 3x224x224") from None
    if not dims or any(d < 1 for d in dims) or len(dims) not in (1, 3):
        raise FitError(f"cannot read --input {text!r}: expected a vector size such as 128 or an image CxHxW such as 3x224x224")
    return dims


# -- AMP emulation --------------------------------------------------------------------------
_LOW = {torch.conv1d, torch.conv2d, torch.conv3d, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d,
        F.conv_transpose2d, F.conv_transpose3d, F.linear, torch.matmul, torch.mm, torch.bmm, torch.addmm,
        torch.baddbmm, torch.addbmm, torch.Tensor.matmul, torch.Tensor.mm, torch.Tensor.bmm,
        torch.Tensor.__matmul__, F.scaled_dot_product_attention, torch.einsum}
_FP32 = {F.softmax, torch.softmax, torch.Tensor.softmax, F.log_softmax, torch.log_softmax, torch.Tensor.log_softmax,
         F.layer_norm, F.group_norm, F.cross_entropy, F.nll_loss, F.mse_loss, F.l1_loss, F.smooth_l1_loss,
         F.binary_cross_entropy_with_logits, F.kl_div, torch.exp, torch.log, torch.pow, torch.Tensor.exp,
         torch.Tensor.log, torch.Tensor.pow, torch.logsumexp, torch.cumsum, torch.cumprod, torch.rsqrt,
         torch.reciprocal, F.softplus, F.cosine_similarity}


class AutocastEmulation(TorchFunctionMode):
    """CUDA autocast's casting policy (aten/src/ATen/autocast_mode.cpp lists), as torch
    functions, for tensors (meta ones included) that CUDA autocast would see."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype
        self.cache: dict[int, torch.Tensor] = {}

    def _cast(self, t, dtype):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dtype == dtype:
            return t
        if dtype != torch.float32 and t.is_leaf and t.requires_grad:  # autocast caches weight casts
            hit = self.cache.get(id(t))
            if hit is None:
                hit = self.cache[id(t)] = t.to(dtype)
            return hit
        return t.to(dtype)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = self.dtype if func in _LOW else torch.float32 if func in _FP32 else None
        if target is not None:
            args = tuple(self._cast(a, target) for a in args)
            kwargs = {k: self._cast(v, target) for k, v in kwargs.items()}
        return func(*args, **kwargs)


# -- the step -----------------------------------------------------------------------------
def _optimizer(name: str, params, foreach):
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.01, foreach=foreach)
    if name == "sgd-momentum":
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, foreach=foreach)
    if name == "adam":
        return torch.optim.Adam(params, lr=1e-4, foreach=foreach)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-4, foreach=foreach)
    raise FitError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for item in out:
            if isinstance(item, torch.Tensor):
                return item
    if isinstance(out, dict):
        return _first_tensor(list(out.values()))
    raise FitError(f"the model returned {type(out).__name__}, not a tensor to take a loss of")


@contextmanager
def _attribution(model: nn.Module, tracker: MemoryTracker):
    """Name the top-level module running forward (the children of ModuleLists, which are never
    called themselves, count as top level), and mark the SAGAN attention layers forward and
    backward (full backward hooks), so the peak can be attributed."""
    stack: list[str] = []
    handles = []

    def update():
        tracker.module = "/".join(dict.fromkeys(stack))

    def push(name):
        def hook(*_):
            stack.append(name)
            update()
        return hook

    def pop(*_):
        if stack:
            stack.pop()
        update()

    tops = []
    for name, child in model.named_children():
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            tops += [(f"{name}.{sub}", m) for sub, m in child.named_children()]
        else:
            tops.append((name, child))
    for name, child in tops:
        handles += [child.register_forward_pre_hook(push(name)), child.register_forward_hook(pop)]
    def mark_backward(module, args, out):
        # hooks on the autograd nodes this layer created (not on tensors: nothing is wrapped or
        # kept), so the backward's allocations are attributed to the layer as well
        stop = {id(t.grad_fn) for t in tensors_in(args) if t.grad_fn is not None}
        frontier = [t.grad_fn for t in tensors_in(out) if t.grad_fn is not None]
        seen = set()
        while frontier:
            node = frontier.pop()
            if node is None or id(node) in seen or id(node) in stop:
                continue
            seen.add(id(node))
            node.register_prehook(lambda grad_outputs: push("attention")())
            node.register_hook(lambda grad_inputs, grad_outputs: pop())
            frontier += [n for n, _ in node.next_functions]

    for module in model.modules():
        if is_sagan_attention(module):
            handles += [module.register_forward_pre_hook(push("attention")), module.register_forward_hook(pop),
                        module.register_forward_hook(mark_backward)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        tracker.module = ""


@dataclass
class StepResult:
    peak_total: int | None  # bytes at the peak, baseline included (what the card must hold)
    baseline: int
    status: str = "ok"
    message: str = ""
    breakdown: dict = field(default_factory=dict)  # category -> bytes at the peak
    modules: dict = field(default_factory=dict)  # top-level module -> bytes at the peak
    attention_bytes: int = 0  # allocated by SAGAN layers (forward or backward) and alive at the peak
    attention_layers: int = 0
    top_tensors: list[TensorInfo] = field(default_factory=list)


def run_step(factory: Callable[[], nn.Module], input_shape: tuple[int, ...], batch: int, gpu: gpus.GPU | None, *,
             optimizer: str = "adam", amp: str | None = None, convert_to: tuple[str, dict] | None = None,
             device: str = "meta", cap: int | None = None) -> StepResult:
    """Two training steps of the model on `device` (meta: simulated; cpu: measured under the
    tracker) costed for `gpu` (None: the CPU)."""
    if optimizer not in OPTIMIZERS:
        raise FitError(f"unknown optimizer {optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
    amp_dtype = {None: None, "fp16": torch.float16, "bf16": torch.bfloat16}.get(amp, "bad")
    if amp_dtype == "bad":
        raise FitError(f"unknown --amp {amp!r}; expected fp16 or bf16")
    if gpu is not None and amp_dtype is not None and (why := gpu.supports(amp_dtype)):
        raise FitError(why)
    try:
        with torch.device(device):
            model = factory()
    except Exception as err:
        raise FitError(f"building the model failed: {type(err).__name__}: {_one_line(err)}") from None
    if not isinstance(model, nn.Module):
        raise FitError(f"the factory returned {type(model).__name__}, not an nn.Module")
    model.to(device).train()
    layers = sum(is_sagan_attention(m) for m in model.modules())
    if convert_to:
        convert(model, convert_to[0], **convert_to[1])
    params = [p for p in model.parameters() if p.requires_grad]
    x = torch.empty(batch, *input_shape, device=device) if device == "meta" else torch.randn(batch, *input_shape)
    cuda = gpu is not None
    opt = _optimizer(optimizer, params, True if cuda and params else None)
    if cuda:
        tracker = MemoryTracker(CudaCachingAllocator(cap), device, rules=CudaRules(gpu))
        caps = gpu.caps()
    else:
        tracker = MemoryTracker(ExactAllocator(), (device, "cpu"))  # host-side scalars are CPU memory too
        caps = backends.CPU
    tracker.keep_peak_live = True
    tracker.phase = "baseline"
    result = StepResult(None, 0, attention_layers=layers)
    try:
        tracker.add_baseline([*model.parameters(), *model.buffers()], "parameters")
        tracker.add_baseline([x], "input")
        if cuda:  # library workspaces held for the process once the first matmul ran (CublasHandlePool.cpp)
            tracker.reserve(gpu.cublas_workspace, "cuBLAS workspace")
            if any(isinstance(m, nn.Linear) and m.bias is not None for m in model.modules()):
                tracker.reserve(1024 * 1024, "cuBLASLt workspace")
    except SimulatedOOM as err:
        result.status, result.message = "oom", f"out of memory (simulated): {err}"
        return result
    result.baseline = tracker.baseline
    grads, states = set(), set()
    try:
        with ExitStack() as stack:
            if device == "meta":
                stack.enter_context(backends.simulating(caps))
            stack.enter_context(_attribution(model, tracker))
            stack.enter_context(tracker)
            for _ in range(2):  # the second step is the steady state: optimizer state exists
                opt.zero_grad(set_to_none=True)
                tracker.phase = "forward"
                if amp_dtype is not None:
                    with AutocastEmulation(amp_dtype):
                        loss = _first_tensor(model(x)).float().mean()
                    loss = loss * 65536.0  # GradScaler
                else:
                    loss = _first_tensor(model(x)).float().mean()
                tracker.phase = "backward"
                loss.backward()
                del loss
                grads |= {tracker.key_of.get(p.grad.untyped_storage()) for p in params if p.grad is not None}
                tracker.phase = "optimizer"
                if amp_dtype is not None:
                    for p in params:
                        if p.grad is not None:
                            p.grad.mul_(1 / 65536.0)  # GradScaler.unscale_ (in place)
                opt.step()
                states |= {tracker.key_of.get(t.untyped_storage()) for st in opt.state.values()
                           for t in st.values() if isinstance(t, torch.Tensor) and t.device.type in tracker.device_types}
    except SimulatedOOM as err:
        result.status, result.message = "oom", f"out of memory (simulated): {err}"
        return result
    except FitError:
        raise
    except Exception as err:
        raise FitError(f"the model rejected a batch of {batch} x {'x'.join(map(str, input_shape))}: "
                       f"{type(err).__name__}: {_one_line(err)}") from None
    result.peak_total = tracker.allocator.peak
    result.top_tensors = tracker.peak_tensors
    breakdown = dict.fromkeys(CATEGORIES, 0)
    modules: dict[str, int] = {}
    for key, info in tracker.peak_live:
        if info.phase == "baseline":
            cat = "input" if info.op == "input" else "parameters"
        elif key in grads:
            cat = "gradients"
        elif key in states:
            cat = "optimizer state"
        elif info.phase == "forward":
            cat = "activations"
        else:
            cat = "temporary"
        breakdown[cat] += info.bytes
        path = info.module.split("/") if info.module else []
        if info.phase == "forward" and path:
            modules[path[0]] = modules.get(path[0], 0) + info.bytes
        if "attention" in path:
            result.attention_bytes += info.bytes
    result.breakdown, result.modules = breakdown, modules
    return result


# -- the answer ---------------------------------------------------------------------------
@dataclass
class FitResult:
    model: str
    input_shape: tuple[int, ...]
    batch: int
    target: str
    usable: int
    optimizer: str
    amp: str | None
    step: StepResult
    conversions: dict = field(default_factory=dict)  # impl label -> StepResult
    max_batch: int | None = None

    @property
    def fits(self) -> bool:
        return self.step.status == "ok" and self.step.peak_total is not None and self.step.peak_total <= self.usable

    def to_json(self) -> dict:
        def step(s: StepResult) -> dict:
            return {"status": s.status, "message": s.message, "peak_bytes": s.peak_total, "baseline_bytes": s.baseline,
                    "fits": s.status == "ok" and s.peak_total is not None and s.peak_total <= self.usable,
                    "breakdown": s.breakdown, "modules": s.modules, "attention_bytes": s.attention_bytes}

        return {"model": self.model, "input": list(self.input_shape), "batch": self.batch, "target": self.target,
                "usable_bytes": self.usable, "optimizer": self.optimizer, "amp": self.amp, "fits": self.fits,
                "max_batch": self.max_batch, "attention_layers": self.step.attention_layers, **step(self.step),
                "conversions": {k: step(v) for k, v in self.conversions.items()}}


def fit(model, input_shape, batch: int, target="t4", *, optimizer: str = "adam", amp: str | None = None,
        headroom: float = 0.10, find_max_batch: bool = False, conversions=CONVERSIONS, name: str = "") -> FitResult:
    """Simulate a training step of `model` (an nn.Module class, a factory, or an instance whose
    class can be rebuilt without arguments) at `batch` on `target` (a catalogue name, a GPU, or
    a recommend.Target)."""
    from .recommend import Target, largest_batch, make_target

    if isinstance(model, str):
        factory, name = load(model), name or model
    elif isinstance(model, nn.Module):
        cls = type(model)
        factory, name = cls, name or cls.__name__
    else:
        factory, name = model, name or getattr(model, "__name__", "model")
    shape = parse_input(input_shape) if isinstance(input_shape, str) else tuple(input_shape)
    if batch < 1:
        raise FitError(f"batch must be >= 1, got {batch}")
    if isinstance(target, Target):
        tgt = target
    else:
        gpu = target if isinstance(target, gpus.GPU) else gpus.lookup(target)
        tgt = make_target(gpu, headroom)
    step = run_step(factory, shape, batch, tgt.gpu, optimizer=optimizer, amp=amp)
    result = FitResult(name, shape, batch, tgt.gpu.name, tgt.usable, optimizer, amp, step)
    if step.attention_layers:
        for impl, opts in conversions:
            label = impl + "".join(f"[{k}={v}]" for k, v in opts.items())
            result.conversions[label] = run_step(factory, shape, batch, tgt.gpu, optimizer=optimizer, amp=amp,
                                                 convert_to=(impl, opts))
    if find_max_batch:
        def run(b):
            from .engine.workload import Record, Workload
            s = run_step(factory, shape, b, tgt.gpu, optimizer=optimizer, amp=amp, cap=tgt.usable)
            rec = Record(Workload("reference", b, 8, 1, 1), status=s.status)
            rec.peak_bytes, rec.baseline_bytes = (s.peak_total or 0) - s.baseline, s.baseline
            return rec
        result.max_batch, _ = largest_batch(run, tgt.usable)
    return result
