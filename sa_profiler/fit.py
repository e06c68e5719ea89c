"""Will this whole model train on that GPU at that batch? One training step, simulated.

The model is built on the meta device (`with torch.device("meta")`: no real memory), then two
steady-state training steps run under the memory tracker: forward, a scalar loss, backward,
optimizer step (the real torch optimizer, so its state is created as in training; on a CUDA
target with the foreach implementation torch uses there). The peak is classified: parameters
and buffers (frozen ones and BatchNorm statistics included, as a real step holds them), input,
gradients, optimizer state, activations (kept from the forward), temporaries; and attributed
to top-level modules and to the attention layers. Every `scaled_dot_product_attention` call,
from any module, runs the kernel the target would run (`attention/routing.py`), and the
result says which backend each attention module got. Each efficient implementation is then
swapped in for the SAGAN layers (`convert`) and simulated again; each conversion is its own
row, and one that fails says why without taking the rest of the answer with it.

AMP (`amp="fp16"|"bf16"`) is emulated with CUDA autocast's casting policy (`amp.py`), on
wherever torch's own autocast state is on, checkpoint recomputation included. A GradScaler
scales the loss.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import importlib.util
import sys
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import gpus, library_models, torch_compat
from . import inputs as model_inputs
from .amp import DTYPES as AMP_DTYPES
from .amp import AutocastEmulation
from .attention import backends, convert, fused, is_sagan_attention
from .attention.explicit import Finder
from .attention.routing import AttentionRouting, active_modes
from .attention.routing import simulating as routing_simulating
from .engine.allocator import CudaCachingAllocator, ExactAllocator, SimulatedOOM
from .engine.layouts import ChainedRules, LayoutRules
from .engine.rules import CudaRules
from .engine import workspaces
from .engine.tracker import MemoryTracker, tensors_in
from .engine.values import InputValues, ValueBranch
from .engine.workload import TensorInfo

OPTIMIZERS = ("sgd", "sgd-momentum", "adam", "adamw")
CATEGORIES = ("parameters", "input", "gradients", "optimizer state", "activations", "temporary",
              "library workspaces")
CONVERSIONS = (("sdpa", {}), ("chunked", {"chunk": 1024, "checkpoint": True}))
ENGINES = ("simulate", "measure")


class FitError(ValueError):
    """A model, input or option that cannot be used (one line for the user)."""


# -- loading ------------------------------------------------------------------------------
def load(spec: str, args: dict | None = None) -> Callable[[], nn.Module]:
    """`FILE.py:NAME`, `module:NAME` or a library model (`timm:NAME`, `torchvision:NAME`,
    `transformers:MODEL_TYPE`, `diffusers:CLASS`, a folder with a config.json: see
    `library_models.py`) -> a zero-argument factory of the model.

    A file is imported as `python FILE.py` would see it: its folder is importable (so a
    `from spectral import SpectralNorm` beside it works); a file inside a package (folders
    with `__init__.py`) is imported as that package's module, so relative imports work too."""
    if library_models.is_library_spec(spec):
        try:
            return library_models.load(spec, args)
        except library_models.LibraryError as err:
            raise FitError(str(err)) from None
    if ":" not in spec:
        raise FitError(f"cannot read model {spec!r}: expected FILE.py:NAME, module:NAME, timm:NAME, torchvision:NAME, "
                       f"transformers:MODEL_TYPE, diffusers:CLASS or a folder with a config.json")
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py"):
        module = _import_file(Path(where), spec)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as err:
            raise FitError(f"no module {where!r} (from model {spec!r}): {_one_line(err)}") from None
        except Exception as err:
            raise FitError(f"importing {where!r} failed: {type(err).__name__}: {_one_line(err)}") from None
    obj = getattr(module, name, None)
    if obj is None:
        raise FitError(f"{where!r} has no {name!r}; expected an nn.Module class or a factory function")
    if not callable(obj):
        raise FitError(f"{spec!r} is not callable; expected an nn.Module class or a factory function")
    factory = lambda: obj(**(args or {}))  # noqa: E731
    factory.__name__ = name
    return factory


def _import_file(path: Path, spec: str):
    if not path.is_file():
        raise FitError(f"no such file: {str(path)!r} (from model {spec!r})")
    path = path.resolve()
    root, parts = path.parent, [path.stem]
    while (root / "__init__.py").is_file() and root.parent != root:
        parts.insert(0, root.name)
        root = root.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    mod_name = ".".join(parts)
    try:
        existing = sys.modules.get(mod_name)
        if existing is not None and Path(getattr(existing, "__file__", "") or "").resolve() == path:
            return existing
        if existing is None and len(parts) > 1:
            return importlib.import_module(mod_name)
        # a top-level file: its own module name when free (what `import stem` beside it gives)
        if existing is not None:
            mod_name = f"sa_profiler_user_{abs(hash(str(path)))}"
        loader = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules[mod_name] = module
        try:
            loader.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(mod_name, None)
            raise
        return module
    except FitError:
        raise
    except Exception as err:
        raise FitError(f"importing {str(path.name)!r} failed: {type(err).__name__}: {_one_line(err)}") from None


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def parse_inputs(spec) -> tuple[model_inputs.Input, ...]:
    try:
        return model_inputs.parse_all(spec)
    except model_inputs.InputError as err:
        raise FitError(str(err)) from None


def factory_of(model) -> tuple[Callable[[], nn.Module], str]:
    """A factory for `model`: a FILE.py:NAME / module:NAME string, an nn.Module class or
    factory, or an instance (its architecture and configuration, without its weights: each
    call gives a copy whose parameters and buffers are new meta tensors)."""
    if isinstance(model, str):
        return load(model), model
    if isinstance(model, nn.Module):
        return (lambda: meta_copy(model)), type(model).__name__
    return model, getattr(model, "__name__", type(model).__name__)


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` whose parameters and buffers are meta tensors of the same shape,
    dtype and requires_grad; no weight is copied. Other attributes are copied as they are."""
    memo = {}
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in memo:
            continue
        twin = torch.empty_like(t, device="meta")
        if isinstance(t, nn.Parameter):
            twin = nn.Parameter(twin, requires_grad=t.requires_grad)
        memo[id(t)] = twin
    return copy.deepcopy(model, memo)


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
    if isinstance(out, torch.Tensor) and out.is_floating_point():
        return out
    if isinstance(out, (tuple, list)):
        for item in out:
            if isinstance(item, torch.Tensor) and item.is_floating_point():
                return item
    if isinstance(out, dict):  # also diffusers' BaseOutput and transformers' ModelOutput
        return _first_tensor(list(out.values()))
    if hasattr(out, "__dataclass_fields__"):
        return _first_tensor([getattr(out, f) for f in out.__dataclass_fields__])
    raise FitError(f"the model returned {type(out).__name__}, not a floating-point tensor to take a loss of")


def is_attention_module(module: nn.Module) -> bool:
    """Attention known by structure before it runs: SAGAN layers, nn.MultiheadAttention (its
    explicit-weights path computes attention without SDPA). Modules that call SDPA are found
    when they do."""
    return is_sagan_attention(module) or isinstance(module, nn.MultiheadAttention)


class _Attribution:
    """Names the top-level module running forward (the children of ModuleLists, which are never
    called themselves, count as top level) and marks the attention layers forward and backward,
    so the peak can be attributed. Attention layers: SAGAN layers, nn.MultiheadAttention, and
    every module that calls scaled_dot_product_attention itself (found by the routing when it
    does; from then on the whole module counts). Backward: hooks on the autograd nodes an
    attention layer created (nothing is wrapped or kept)."""

    def __init__(self, model: nn.Module, tracker: MemoryTracker, routing=None):
        self.tracker = tracker
        self.routing = routing
        self.reentered: list[nn.Module] = []
        self.stack: list[nn.Module] = []
        self.backward_depth = 0
        self.hooked: dict[int, object] = {}  # autograd nodes hooked (held: ids stay theirs)
        self.names = {id(m): n for n, m in model.named_modules()}
        self.attention = {id(m) for m in model.modules() if is_attention_module(m)}
        self.tops = self._tops(model)
        self.handles = []
        for name, module in model.named_modules():
            if module is model:
                continue
            self.handles += [module.register_forward_pre_hook(self._push), module.register_forward_hook(self._pop)]
        self.explicit: dict[str, tuple] = {}  # module -> its attention probabilities' shape (written out by hand)
        if routing is not None:
            routing.where = self.innermost
            routing.on_call = self._found_attention
            routing.explicit = Finder(self._found_explicit)

    @staticmethod
    def _tops(model) -> dict[int, str]:
        tops = {}
        for name, child in model.named_children():
            if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
                for sub, m in child.named_children():
                    tops[id(m)] = f"{name}.{sub}"
            else:
                tops[id(child)] = name
        return tops

    def innermost(self) -> str:
        return self.names.get(id(self.stack[-1]), "") if self.stack else ""

    def _found_explicit(self, shape) -> None:
        if self.stack and self.tracker.phase == "forward":
            self.explicit.setdefault(self.innermost() or TOP_ATTENTION, shape)
            self._found_attention(None, None)

    def _found_attention(self, call, out) -> None:
        if self.stack and id(self.stack[-1]) not in self.attention:
            self.attention.add(id(self.stack[-1]))
            self._update()

    def _update(self) -> None:
        top = next((self.tops[id(m)] for m in self.stack if id(m) in self.tops), "")
        attention = self.backward_depth > 0 or any(id(m) in self.attention for m in self.stack)
        self.tracker.module = "/".join(p for p in (top, "attention" if attention else "") if p)

    def _push(self, module, args):
        self.stack.append(module)
        self._update()
        if self.routing is not None and self.tracker.phase == "backward":
            # forward code re-run in the backward (reentrant checkpoint): autograd cleared the
            # torch-function modes, so the routing (and AMP) is re-entered around the module
            modes = active_modes()
            if modes is not None and self.routing not in modes:
                self.routing.__enter__()
                self.reentered.append(module)

    def _pop(self, module, args, out):
        if self.reentered and self.reentered[-1] is module:
            self.reentered.pop()
            self.routing.__exit__(None, None, None)
        if self.stack and self.stack[-1] is module:
            self.stack.pop()
        self._update()
        if id(module) in self.attention and torch.is_grad_enabled():
            self._mark_backward(args, out)

    def _enter_backward(self, *_):
        self.backward_depth += 1
        self._update()

    def _leave_backward(self, *_):
        self.backward_depth = max(0, self.backward_depth - 1)
        self._update()

    def _mark_backward(self, args, out) -> None:
        # nodes held by id -> node while walking, each read once: before torch 2.9 `t.grad_fn`
        # makes a new Python object per read, which dies with the read, and a later node's
        # object can take its id
        stop = {id(n): n for n in (t.grad_fn for t in tensors_in(args)) if n is not None}
        # nodes made before the layer ran (sequence numbers grow as nodes are made) are not its
        before = max((torch_compat.sequence_nr(n) for n in stop.values()), default=-1)
        frontier = [t.grad_fn for t in tensors_in(out) if t.grad_fn is not None]
        seen = {}
        while frontier:
            node = frontier.pop()
            if node is None or id(node) in seen or id(node) in stop or torch_compat.sequence_nr(node) <= before:
                continue
            seen[id(node)] = node
            frontier += [n for n, _ in node.next_functions]
            if id(node) in self.hooked:  # a parameter's AccumulateGrad node outlives the step
                continue
            self.hooked[id(node)] = node
            self.handles += [node.register_prehook(lambda grad_outputs: self._enter_backward()),
                             node.register_hook(lambda grad_inputs, grad_outputs: self._leave_backward())]

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.tracker.module = ""

    @property
    def layers(self) -> int:
        return len(self.attention)


OUTSIDE = "(the model's own code, outside its modules)"  # activations made by the top-level forward itself
TOP_ATTENTION = "(attention called at the top level)"


@dataclass
class StepResult:
    peak_total: int | None  # bytes at the peak, baseline included (what the card must hold)
    baseline: int
    status: str = "ok"
    message: str = ""
    breakdown: dict = field(default_factory=dict)  # category -> bytes at the peak
    modules: dict = field(default_factory=dict)  # top-level module -> bytes at the peak
    attention_bytes: int = 0  # allocated by attention layers (forward or backward) and alive at the peak
    attention_layers: int = 0  # SAGAN layers, nn.MultiheadAttention and modules that call SDPA
    sagan_layers: int = 0
    sagan_modules: list = field(default_factory=list)  # their names
    attention_calls: list = field(default_factory=list)  # per module: the SDPA backend the target runs
    explicit_attention: dict = field(default_factory=dict)  # module -> probabilities' shape, attention written out
    fused_lines: list = field(default_factory=list)  # the library switches this step was run with (fuse=True)
    backends: dict = field(default_factory=dict)  # SDPA backend -> calls in one step
    top_tensors: list[TensorInfo] = field(default_factory=list)
    timeline: list = field(default_factory=list)  # (op, allocated bytes, phase, module) per op, both steps
    peak_index: int | None = None  # the op in `timeline` that set the peak
    # the step run again with the usable memory as the allocator's cap: False where the caching
    # allocator runs out under it although the peak is below (fragmentation); None: not run so
    fits_cap: bool | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.peak_total is not None


def _calls_by_module(calls) -> list[dict]:
    groups: dict[tuple, int] = Counter(
        (c.module, c.backend, c.dtype, c.query, c.key, c.value, c.mask, c.is_causal) for c in calls)
    return [{"module": m or "(top level)", "backend": b, "calls": n, "dtype": dt, "query": list(q), "key": list(k),
             "value": list(v), "mask": list(mask) if mask is not None else None, "is_causal": causal}
            for (m, b, dt, q, k, v, mask, causal), n in groups.items()]


def _materialise(model: nn.Module, device) -> None:
    """Meta parameters/buffers (a model given as an instance) made real on `device` for a
    measured step: small random floats, zero integers."""
    if not any(t.is_meta for t in list(model.parameters()) + list(model.buffers())):
        return
    model.to_empty(device=device)
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.normal_(0.0, 0.02)
            else:
                t.zero_()


def run_step(factory: Callable[[], nn.Module], input_shape, batch: int, gpu: gpus.GPU | None, *,
             optimizer: str = "adam", amp: str | None = None, convert_to: tuple[str, dict] | None = None,
             device: str = "meta", cap: int | None = None, timeline: bool = False, fuse: bool = False) -> StepResult:
    """Two training steps of the model on `device` (meta: simulated; cpu: measured under the
    tracker) costed for `gpu` (None: the CPU). `input_shape`: the model's inputs (see
    `inputs.py`: a shape, a `--input` string, a list of them, or a dict by argument name)."""
    if optimizer not in OPTIMIZERS:
        raise FitError(f"unknown optimizer {optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
    if amp is not None and amp not in AMP_DTYPES:
        raise FitError(f"unknown --amp {amp!r}; expected fp16 or bf16")
    amp_dtype = AMP_DTYPES.get(amp)
    if amp_dtype is not None and gpu is None:
        raise FitError("--amp emulates CUDA autocast; give a CUDA target (--gpu NAME or --gpu-mem SIZE), not the CPU")
    if gpu is not None and amp_dtype is not None and (why := gpu.supports(amp_dtype)):
        raise FitError(why)
    if gpu is not None and device != "meta":
        raise FitError("a CUDA target is simulated (device meta); measuring runs on the CPU target only")
    specs = parse_inputs(input_shape)
    try:
        with torch.device(device):
            model = factory()
    except Exception as err:
        raise FitError(f"building the model failed: {type(err).__name__}: {_one_line(err)}") from None
    if not isinstance(model, nn.Module):
        raise FitError(f"the factory returned {type(model).__name__}, not an nn.Module")
    if device != "meta":
        _materialise(model, device)
    model.to(device).train()
    sagan = [n for n, m in model.named_modules() if is_sagan_attention(m)]
    if convert_to:
        convert(model, convert_to[0], **convert_to[1])
    fused_lines = fused.switch(model) if fuse else []
    if fuse and not fused_lines:
        raise FitError("no library switch routes this model's explicit attention through scaled_dot_product_attention")
    params = [p for p in model.parameters() if p.requires_grad]
    args, kwargs = model_inputs.make(specs, batch, device)
    specs_in_order = [s for s in specs if not s.name] + [s for s in specs if s.name]
    input_values = [(t, s.value(batch)) for s, t in zip(specs_in_order, [*args, *kwargs.values()])
                    if device == "meta" and s.has_values]
    cuda = gpu is not None
    opt = _optimizer(optimizer, params, True if cuda and params else None) if params else None
    if cuda:
        tracker = MemoryTracker(CudaCachingAllocator(cap), device, rules=ChainedRules(LayoutRules(), CudaRules(gpu)))
        caps = gpu.caps()
    else:  # host-side scalars are CPU memory too; a measured step needs no layout corrections
        tracker = MemoryTracker(ExactAllocator(), (device, "cpu"), rules=LayoutRules(cuda=False) if device == "meta" else None)
        caps = backends.CPU
    tracker.keep_peak_live = True
    if cuda:  # a fresh process: each thread's cuBLAS/cuBLASLt workspace at its first product (workspaces.py)
        tracker.workspace_bytes = workspaces.sizes(gpu.cublas_workspace)
    if timeline:
        tracker.timeline = []
    tracker.phase = "baseline"
    result = StepResult(None, 0, sagan_layers=len(sagan), sagan_modules=sagan, fused_lines=fused_lines)
    try:
        tracker.add_baseline([*model.parameters(), *model.buffers()], "parameters")
        tracker.add_baseline([*args, *kwargs.values()], "input")
    except SimulatedOOM as err:
        result.status, result.message = "oom", f"out of memory (simulated): {err}"
        return result
    result.baseline = tracker.baseline
    grads, states = set(), set()
    attribution = None
    forward_calls = []
    try:
        with ExitStack() as stack:
            if device == "meta":
                routing = stack.enter_context(routing_simulating(caps))
            else:  # a real step: the same mode only logs the SDPA calls torch runs
                routing = AttentionRouting(caps)
                stack.enter_context(torch_compat.checkpoint_scope(routing.reentered))
                stack.enter_context(routing)
            attribution = _Attribution(model, tracker, routing)
            stack.callback(attribution.close)
            autocast = AutocastEmulation(amp_dtype) if amp_dtype is not None else None
            if routing is not None:
                routing.autocast = autocast
            stack.enter_context(tracker)
            values = None
            if device == "meta":  # what is computed from inputs alone, computed for real (values.py)
                values = InputValues(lambda t: tracker.made_by(t, attribution.innermost()))
                for tensor, value in input_values:
                    values.add(tensor, value)
            for _ in range(2):  # the second step is the steady state: optimizer state exists
                if opt is not None:
                    opt.zero_grad(set_to_none=True)
                tracker.phase = "forward"
                if routing is not None:
                    routing.calls.clear()
                with values if values is not None else contextlib.nullcontext():  # not the optimizer: no values there
                    if autocast is not None:
                        with autocast.region():
                            loss = _first_tensor(model(*args, **kwargs)).float().mean()
                        loss = loss * 65536.0  # GradScaler
                    else:
                        loss = _first_tensor(model(*args, **kwargs)).float().mean()
                    if routing is not None:
                        forward_calls = list(routing.calls)
                    tracker.phase = "backward"
                    if loss.requires_grad:
                        loss.backward()
                    del loss
                grads |= {tracker.key_of.get(p.grad.untyped_storage()) for p in params if p.grad is not None}
                tracker.phase = "optimizer"
                if opt is None:
                    continue
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
    except ValueBranch as err:
        raise FitError(str(err)) from None
    except Exception as err:
        raise FitError(f"the model rejected a batch of {batch} x {model_inputs.describe(specs)}: "
                       f"{type(err).__name__}: {_one_line(err)}") from None
    result.attention_layers = attribution.layers
    result.explicit_attention = {m: list(s) for m, s in attribution.explicit.items()}
    result.attention_calls = _calls_by_module(forward_calls)
    result.backends = dict(Counter(c.backend for c in forward_calls))
    result.peak_total = tracker.allocator.peak
    result.top_tensors = tracker.peak_tensors
    result.timeline, result.peak_index = tracker.timeline or [], tracker.peak_index
    breakdown = dict.fromkeys(CATEGORIES, 0)
    modules: dict[str, int] = {}
    for key, info in tracker.peak_live:
        if info.op == "workspace":
            cat = "library workspaces"
        elif info.phase == "baseline":
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
        path = info.module.split("/") if info.module and info.op != "workspace" else []
        if cat == "activations":  # every activation byte under one name: the table adds up to the category
            name = (OUTSIDE if not path else TOP_ATTENTION if path[0] == "attention" else path[0])
            modules[name] = modules.get(name, 0) + info.bytes
        if "attention" in path:
            result.attention_bytes += info.bytes
    result.breakdown, result.modules = breakdown, modules
    return result


# -- the answer ---------------------------------------------------------------------------
@dataclass(repr=False)
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
    inputs: str = ""  # every input, as `--input` would write it
    engine: str = "simulate"
    fp32_step: StepResult | None = None  # the same step without AMP, when AMP was asked for
    torch_version: str | None = None  # the torch whose backend choice was simulated (None: the running one)
    fused: StepResult | None = None  # the step with explicit attention routed through SDPA (library switch)
    fused_note: str = ""  # why there is no fused step, where explicit attention was found

    @property
    def fits(self) -> bool:
        return self.step_fits(self.step)

    def __repr__(self) -> str:  # the short answer, in a plain Python or IPython terminal
        from .units import format_bytes

        s = self.step
        verdict = "fits" if self.fits else "does not fit"
        peak = f"peak {format_bytes(s.peak_total)}" if s.peak_total is not None else s.message
        parts = [f"FitResult({self.model}, batch {self.batch} on {self.target}: {peak} of "
                 f"{format_bytes(self.usable)} usable, {verdict}"]
        if self.max_batch is not None:
            parts.append(f"largest batch {self.max_batch}")
        for label, c in self.conversions.items():
            parts.append(f"{label}: {format_bytes(c.peak_total) if c.peak_total else c.status}")
        if self.fused is not None:
            parts.append(f"fused: {format_bytes(self.fused.peak_total) if self.fused.peak_total else self.fused.status}")
        return "; ".join(parts) + ")"

    def step_fits(self, s: StepResult) -> bool:
        """The one verdict every view shows: the step ran to the end with the usable memory as the
        allocator's cap (`verdict`), as the largest-batch search decides each batch."""
        return s.ok and s.peak_total <= self.usable and s.fits_cap is not False

    def to_json(self) -> dict:
        def step(s: StepResult) -> dict:
            return {"status": s.status, "message": s.message, "peak_bytes": s.peak_total, "baseline_bytes": s.baseline,
                    "fits": self.step_fits(s), "breakdown": s.breakdown, "modules": s.modules,
                    "attention_bytes": s.attention_bytes, "attention_calls": s.attention_calls,
                    "sdpa_backends": s.backends, "explicit_attention": s.explicit_attention}

        out = {"model": self.model, "input": list(self.input_shape), "inputs": self.inputs, "batch": self.batch,
               "target": self.target, "engine": self.engine, "usable_bytes": self.usable, "optimizer": self.optimizer,
               "amp": self.amp, "fits": self.fits, "max_batch": self.max_batch,
               "torch_version": self.torch_version or torch.__version__,
               "attention_layers": self.step.attention_layers, "sagan_layers": self.step.sagan_layers,
               **step(self.step), "conversions": {k: step(v) for k, v in self.conversions.items()}}
        if self.fp32_step is not None:
            out["fp32"] = step(self.fp32_step)
        out["fused"] = None if self.fused is None else {**step(self.fused), "change": self.fused.fused_lines}
        if self.fused_note:
            out["fused_note"] = self.fused_note
        return out

    def _repr_html_(self) -> str:  # notebooks
        try:
            from .report.fit_html import fit_html_fragment
        except ImportError:
            from html import escape

            return f"<pre>{escape(str(self.to_json()))}</pre>"
        return fit_html_fragment(self)


def resolve_target(target, headroom: float | int = 0.10):
    """A recommend.Target from a catalogue name, "cpu", a GPU, or a Target."""
    from .recommend import Target, make_target

    if isinstance(target, Target):
        return target
    if isinstance(target, gpus.GPU):
        return make_target(target, headroom)
    if isinstance(target, str) and target.strip().lower() == gpus.HOST:
        return make_target(gpus.host(), headroom)
    try:
        return make_target(gpus.lookup(target), headroom)
    except gpus.UnknownGPU as err:
        raise FitError(str(err)) from None


def fit(model, input_shape, batch: int, target="t4", *, optimizer: str = "adam", amp: str | None = None,
        headroom: float = 0.10, find_max_batch: bool = False, conversions=CONVERSIONS, name: str = "",
        engine: str = "simulate", timeline: bool = True, compare_fp32: bool = False,
        torch_version: str | None = None) -> FitResult:
    """A training step of `model` at `batch` on `target`.

    `model`: an nn.Module class, a factory, a `FILE.py:NAME`/`module:NAME` string, or an
    instance (its architecture and configuration; its weights are not copied). `input_shape`:
    an int (a vector), a shape tuple, a `--input` string, a list of them (several positional
    inputs), or a dict by argument name (see `sa_profiler.inputs`). `target`: a catalogue name,
    "cpu", a GPU, or a recommend.Target. `engine="measure"` runs the step for real on this CPU
    under the tracker (the CPU target only). With `compare_fp32`, an AMP answer also carries the
    float32 step. `torch_version` (X.Y or X.Y.Z in the supported range): SDPA backends chosen
    as that torch would (simulation only)."""
    from .attention.backends import assume_torch, checked_torch_version

    try:
        torch_version = checked_torch_version(torch_version, engine)
    except ValueError as err:
        raise FitError(str(err)) from None
    with assume_torch(torch_version):
        result = _fit(model, input_shape, batch, target, optimizer=optimizer, amp=amp, headroom=headroom,
                      find_max_batch=find_max_batch, conversions=conversions, name=name, engine=engine,
                      timeline=timeline, compare_fp32=compare_fp32)
    result.torch_version = torch_version
    return result


def _fit(model, input_shape, batch, target, *, optimizer, amp, headroom, find_max_batch, conversions, name, engine,
         timeline, compare_fp32) -> FitResult:
    factory, default_name = factory_of(model)
    name = name or default_name
    specs = parse_inputs(input_shape)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise FitError(f"batch must be a positive integer, got {batch!r}")
    if engine not in ENGINES:
        raise FitError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    tgt = resolve_target(target, headroom)
    gpu = None if tgt.gpu.key == gpus.HOST else tgt.gpu
    if engine == "measure" and gpu is not None:
        raise FitError("--engine measure runs the step on this CPU: use it with --gpu cpu "
                       "(CUDA steps are measured by benchmarks/validate_fit_cuda.py on the card)")
    device = "cpu" if engine == "measure" else "meta"

    def step_at(**kw) -> StepResult:
        """The step with the verdict every view shows: on a GPU target it runs with the usable
        memory as the allocator's cap, as `max_batch` runs each batch (a step that runs to its
        end there is the same step as without the cap); only one that runs out is run again
        without it, for what it would need."""
        run = functools.partial(run_step, factory, specs, batch, gpu, optimizer=optimizer, amp=amp, device=device,
                                timeline=timeline, **kw)
        if gpu is None:
            return run()
        capped = run(cap=tgt.usable)
        if capped.status != "oom":
            capped.fits_cap = capped.ok
            return capped
        full = run()
        full.fits_cap = False
        if full.ok and full.peak_total <= tgt.usable:
            full.message = ("the caching allocator runs out of blocks under the usable memory although the peak is "
                            "below it (fragmentation)")
        return full

    step = step_at()
    shape = specs[0].shape if specs else ()
    result = FitResult(name, shape, batch, tgt.gpu.name, tgt.usable, optimizer, amp, step,
                       inputs=model_inputs.describe(specs), engine=engine)
    if compare_fp32 and amp:
        result.fp32_step = run_step(factory, specs, batch, gpu, optimizer=optimizer, device=device, timeline=timeline)
    if step.sagan_layers:
        for impl, opts in conversions:
            label = impl + "".join(f"[{k}={v}]" for k, v in opts.items())
            try:
                result.conversions[label] = step_at(convert_to=(impl, opts))
            except FitError as err:  # one conversion that fails is a row with its reason
                result.conversions[label] = StepResult(None, step.baseline, status="error", message=str(err),
                                                       sagan_layers=step.sagan_layers)
    if set(step.explicit_attention) - set(step.sagan_modules) and engine == "simulate":
        try:  # the same step with the explicit attention fused by its library's switch
            result.fused = step_at(fuse=True)
        except FitError as err:
            result.fused_note = (f"{err}: call torch.nn.functional.scaled_dot_product_attention in "
                                 f"{next(iter(step.explicit_attention))} instead")
    if find_max_batch:
        result.max_batch = max_batch(factory, specs, tgt, optimizer=optimizer, amp=amp, device=device)
    return result


def max_batch(factory, specs, tgt, *, optimizer="adam", amp=None, device="meta") -> int:
    """The largest batch whose step fits the target's usable memory (`recommend.largest_batch`
    on the engine, each step run under the usable memory as the allocator's cap)."""
    from .engine.workload import Record, Workload
    from .recommend import largest_batch

    gpu = None if tgt.gpu.key == gpus.HOST else tgt.gpu

    def run(b):
        s = run_step(factory, specs, b, gpu, optimizer=optimizer, amp=amp, device=device,
                     cap=tgt.usable if gpu is not None else None)
        rec = Record(Workload("reference", b, 8, 1, 1), status=s.status)
        rec.peak_bytes, rec.baseline_bytes = (s.peak_total or 0) - s.baseline, s.baseline
        return rec

    best, _ = largest_batch(run, tgt.usable)
    return best
