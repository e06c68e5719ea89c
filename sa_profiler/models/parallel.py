"""One rank of a data-parallel job, as torch runs it: `DistributedDataParallel`, or FSDP2's
`fully_shard` on each repeated block and the root, around the model, under torch's fake process
group (rank 0 of N: collectives complete at once and move no data, so world size 64 costs what
world size 2 does). The buckets, shards, all-gather and reduce-scatter buffers are allocated
where and when the library allocates them; the tracker labels them (`PARALLEL_CATEGORIES`).

Under the fake group, and on meta tensors, the libraries need what they do not do on their own,
each a check, a device choice or a result, none an allocation (restored on exit):
- DDP's constructor reads every parameter's shape back as a number
  (`distributed.utils._verify_param_shape_across_processes`): skipped on meta; on torch 2.4,
  whose c10d broadcast has no meta kernel, so is its broadcast of rank 0's parameters;
- DDP reads rank 0's bucket indices (and, with `find_unused_parameters`, the all-reduced map of
  the parameters used) back to the host: on meta the host tensor keeps what rank 0 has
  (`_HostCopies`);
- the fake group's all-reduce completes with no tensor, where DDP's reducer wants its bucket
  back: a comm hook that divides the bucket by the world size in place and returns it, as the
  default hook's result is (reducer.cpp `run_comm_hook`);
- FSDP2 takes its device from the mesh (`_get_device_from_mesh`: cpu), its streams from that
  device's module, and refuses meta parameters (`_validate_no_meta_params`): on meta its device
  is meta, with the CPU's stream stand-ins, and the check is skipped.
"""

from __future__ import annotations

import contextlib
import importlib
import warnings

import torch
from torch import nn

from sa_profiler import names
from sa_profiler.models import blocks
from sa_profiler.models.loading import FitError
from sa_profiler.torch_compat.dispatch import TorchDispatchMode

# torch's own optimizers step DTensor shards; the optimizers from other packages do not
SHARDED_OPTIMIZERS = ("sgd", "sgd-momentum", "adam", "adamw", "adam-fused", "adamw-fused")


class ParallelError(FitError):
    """A parallel setting that cannot run here (one line)."""


def unsupported(strategy: str, version: str | None = None) -> str | None:
    """Why `strategy` cannot run under torch `version` (default: the running one), or None."""
    import torch.distributed as dist

    version = version or torch.__version__
    if strategy not in names.STRATEGY_TORCH:
        return None
    if not dist.is_available():
        return f"--parallel {strategy} needs torch.distributed, which this torch build ({version}) lacks"
    return names.strategy_unsupported(strategy, version)


def describe(parallel, batch: int, accumulation: int = 1) -> str:
    """One line: the strategy, the ranks, and the global batch they train."""
    name = names.STRATEGY_NAMES[parallel.strategy]
    how = ""
    if parallel.strategy == "fsdp":
        how = (", each block's parameters freed after its forward" if parallel.reshard_after_forward
               else ", parameters kept gathered from forward to backward")
    if parallel.find_unused_parameters:
        how = ", finding the parameters the loss does not use"
    micro = f" x {accumulation} micro-steps" if accumulation > 1 else ""
    which = "rank 0, which holds the largest shards" if parallel.strategy == "fsdp" else "each holds a whole replica"
    return (f"{name} over {parallel.world_size} ranks{how}; the figures are per rank ({which}); global batch "
            f"{batch * accumulation * parallel.world_size} = {batch} per rank{micro} x {parallel.world_size} ranks")


def assumptions(parallel, cuda: bool) -> list[str]:
    """What the simulated rank does not see, each with its figure and source."""
    out = ["Not counted: the communication library's own buffers (NCCL_BUFFSIZE, 4 MiB by default, for each "
           "channel it opens to a peer; NCCL's environment-variable documentation); keep them in the headroom.",
           "Times are each rank's compute alone: the collectives' time is not modelled."]
    if cuda:
        out.insert(0, "Each rank is one process on its own card: its CUDA context is taken out of the usable memory, "
                      "as for one card.")
    return out


@contextlib.contextmanager
def rank_zero(world_size: int):
    """Rank 0 of `world_size` in torch's fake process group, for the duration."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore  # registers the "fake" backend

    if dist.is_initialized():
        raise ParallelError("a process group is initialised in this process already; "
                            "simulate a parallel step from a process that has none")
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


class _HostCopies(TorchDispatchMode):
    """A copy into a host tensor from a meta one leaves the host tensor as it is: DDP reading
    back what rank 0 has already (its bucket indices; with `find_unused_parameters`, the map of
    the parameters used, all-reduced: on the fake group rank 0's own)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func is torch.ops.aten.copy_.default and args[0].device.type == "cpu"
                and args[1].device.type == "meta"):
            return args[0]
        return func(*args, **kwargs)


def host_copies(device: str):
    """A DDP step on meta runs inside `_HostCopies` (entered before the tracker)."""
    return _HostCopies() if device == "meta" else contextlib.nullcontext()


UNUSED = "Expected to have finished reduction in the prior iteration"  # DDP's reducer, on an unused parameter


def unused_parameters(err: Exception) -> str | None:
    """One line for DDP's refusal of parameters the loss does not reach, or None."""
    if UNUSED not in str(err):
        return None
    return ("DDP: some parameters get no gradient from the loss (the reducer waits for them); a job "
            "passes find_unused_parameters=True: add --find-unused-parameters")


def _all_reduced(world_size, bucket):
    """DDP's comm hook under the fake group: the bucket averaged in place and returned."""
    buffer = bucket.buffer()
    buffer.div_(world_size)
    future = torch.futures.Future()
    future.set_result(buffer)
    return future


class _QuietLogger:
    """DDP's logger without its runtime statistics (timings only, no tensors)."""

    def __init__(self, logger):
        self._logger = logger

    def set_runtime_stats_and_log(self) -> None:
        pass

    def __getattr__(self, name):
        return getattr(self._logger, name)


@contextlib.contextmanager
def _labelled(tracker, label: str):
    previous, tracker.label = tracker.label, label
    try:
        yield
    finally:
        tracker.label = previous


def ddp(model: nn.Module, world_size: int, tracker, on_meta: bool, find_unused_parameters: bool) -> nn.Module:
    """`model` wrapped in DistributedDataParallel (defaults: 25 MiB buckets, the first 1 MiB),
    built under `tracker` so its buckets count; its pre-forward (where the buckets are rebuilt
    in the order the first backward made the gradients ready) is labelled too."""
    import torch.nn.parallel.distributed as ddp_module

    saved = [(name, getattr(ddp_module, name)) for name in ("_verify_param_shape_across_processes",
                                                             "_sync_module_states")]
    if on_meta and find_unused_parameters and not torch._C._dispatch_has_kernel_for_dispatch_key("c10d::allreduce_",
                                                                                                 "Meta"):
        raise ParallelError(f"--find-unused-parameters all-reduces DDP's map of the parameters used each step, and "
                            f"torch {torch.__version__} has no meta kernel for that all-reduce: simulate it under a "
                            f"newer torch")
    if on_meta:
        ddp_module._verify_param_shape_across_processes = lambda *args, **kwargs: None
        if not torch._C._dispatch_has_kernel_for_dispatch_key("c10d::broadcast_", "Meta"):
            # torch 2.4 has no meta kernel for the broadcast of rank 0's parameters; skipped there,
            # with its flattened copies (transient, before the first step)
            ddp_module._sync_module_states = lambda *args, **kwargs: None
    try:
        with _labelled(tracker, "DDP buckets"):
            wrapped = ddp_module.DistributedDataParallel(model, find_unused_parameters=find_unused_parameters)
    finally:
        for name, value in saved:
            setattr(ddp_module, name, value)
    wrapped.register_comm_hook(world_size, _all_reduced)
    if on_meta:  # its runtime statistics time CPU or CUDA kernels only, and warn on meta at each step
        wrapped.logger = _QuietLogger(wrapped.logger)
    pre_forward = wrapped._pre_forward

    def labelled_pre_forward(*args, **kwargs):
        with _labelled(tracker, "DDP buckets"):
            return pre_forward(*args, **kwargs)

    wrapped._pre_forward = labelled_pre_forward
    return wrapped


def _fsdp_package():
    """FSDP2's implementation package (torch.distributed.fsdp._fully_shard from 2.6)."""
    return "torch.distributed.fsdp._fully_shard"


@contextlib.contextmanager
def _fsdp_on(device: str, tracker):
    """FSDP2 running on `device` (meta: the patches in the module notes), its all-gather and
    reduce-scatter buffers and unsharded parameters labelled under `tracker`."""
    package = _fsdp_package()
    group = importlib.import_module(f"{package}._fsdp_param_group")
    param = importlib.import_module(f"{package}._fsdp_param")
    saved: list[tuple[object, str, object]] = []

    def patch(owner, attr, value):
        saved.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, value)

    def labelling(function, label):
        def run(*args, **kwargs):
            with _labelled(tracker, label):
                return function(*args, **kwargs)
        return run

    if device == "meta":
        for name in ("_fsdp_param_group", "_fsdp_collectives", "_fsdp_init", "_fsdp_state", "_fsdp_param",
                     "_fully_shard"):
            module = importlib.import_module(f"{package}.{name}")
            if hasattr(module, "_get_device_handle"):
                original = module._get_device_handle
                patch(module, "_get_device_handle",
                      lambda kind, original=original: torch.cpu if kind == "meta" else original(kind))
        patch(group.FSDPParamGroup, "_validate_no_meta_params", lambda self: None)
    for name in ("foreach_all_gather", "foreach_reduce"):
        patch(group, name, labelling(getattr(group, name), "communication buffers"))
    for name in ("init_all_gather_outputs", "alloc_all_gather_outputs"):
        patch(param.FSDPParam, name, labelling(getattr(param.FSDPParam, name), "unsharded parameters"))
    try:
        yield
    finally:
        for owner, attr, value in reversed(saved):
            setattr(owner, attr, value)


def fsdp(model: nn.Module, world_size: int, *, reshard_after_forward: bool, device: str,
         param_dtype: torch.dtype | None = None) -> list[str]:
    """`fully_shard` on each of the model's repeated blocks (`blocks.repeated_blocks`), then on
    the root, over a 1-D mesh of `world_size`; `param_dtype`: the mixed-precision policy's
    (gradients reduced in float32). The blocks' names."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    fully_shard_module = importlib.import_module(f"{_fsdp_package()}._fully_shard")
    mesh = init_device_mesh("cuda" if device == "cuda" else "cpu", (world_size,))
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    saved = fully_shard_module._get_device_from_mesh
    if device == "meta":
        fully_shard_module._get_device_from_mesh = lambda mesh: torch.device("meta")
    try:
        found = blocks.repeated_blocks(model)
        for _, block in found:
            fully_shard(block, mesh=mesh, reshard_after_forward=reshard_after_forward, mp_policy=policy)
        fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    finally:
        fully_shard_module._get_device_from_mesh = saved
    return [name for name, _ in found]


@contextlib.contextmanager
def sharded_step(tracker, device: str):
    """What a step of an FSDP2 model runs inside: DTensor desugared before the tracker sees an
    op, the library's fake shapes not counted, its buffers labelled."""
    from torch.distributed.tensor import DTensor

    from torch._guards import active_fake_mode

    tracker.subclass, tracker.shape_only = DTensor, lambda: active_fake_mode() is not None
    try:
        with _fsdp_on(device, tracker), warnings.catch_warnings():
            # a caution about in-place ops on a view the model returns: not about memory
            warnings.filterwarnings("ignore", message="FSDP2-wrapped module")
            yield
    finally:
        tracker.subclass, tracker.shape_only = None, lambda: False
