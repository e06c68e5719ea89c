"""Every option a command can judge alone, judged before torch loads: a bad value costs the
interpreter, not torch's import (one line, exit 2, as `common._fail` says it). The commands
convert the values later, with the same functions, so a value passed here is read the same way
there."""

from __future__ import annotations

import click

from sa_profiler import names


def _fail(message: str):
    """A usage error: one line on stderr, exit 2 (`common._OneLineErrors`)."""
    raise click.UsageError(message)



def batch(value: int | None) -> None:
    if value is not None and value < 1:
        _fail(f"--batch must be a positive integer, got {value}")


def headroom(text: str) -> tuple[str, float | int]:
    """("fraction", 0.1) for 10%, ("bytes", n) for a size (`question.parse_headroom`)."""
    from sa_profiler.question import parse_headroom

    try:
        value = parse_headroom(text)
    except ValueError as err:
        _fail(str(err))
    return ("fraction" if str(text).strip().endswith("%") else "bytes"), value


def dtypes(text: str | None) -> list[str] | None:
    if not text:
        return None
    try:
        return [names.dtype_name(d) for d in text.split(",") if d.strip()]
    except ValueError as err:
        _fail(str(err))


def impls(text: str | None) -> list[str] | None:
    """The implementations asked for, each once, in order; None for all."""
    if not text:
        return None
    out = []
    for spec in (s.strip() for s in text.split(",") if s.strip()):
        name, _, backend = spec.partition(":")
        if name == "all":
            return None
        if name not in names.IMPLEMENTATIONS:
            _fail(f"unknown implementation {spec!r}; expected {', '.join(names.IMPLEMENTATIONS)} or sdpa:BACKEND")
        if backend and (name != "sdpa" or backend not in names.BACKENDS):
            _fail(f"unknown implementation {spec!r}; a backend goes with sdpa only: sdpa:{'|'.join(names.BACKENDS)}")
        if spec not in out:  # a repeated implementation is one row, not two
            out.append(spec)
    return out


def card(gpu_name: str | None, gpu_mem: str | None, *, cpu_allowed: bool = False) -> None:
    """--gpu names a catalogue card (or cpu where the command runs on this machine), --gpu-mem a
    size; not both."""
    from sa_profiler.targets import gpus
    from sa_profiler.units import ParseError, parse_memory

    if gpu_name and gpu_mem and not (cpu_allowed and gpu_name.strip().lower() == "cpu"):
        _fail("give either --gpu NAME or --gpu-mem SIZE, not both")
    try:
        if gpu_mem:
            parse_memory(gpu_mem)
        if gpu_name and not (cpu_allowed and gpu_name.strip().lower() == "cpu"):
            gpus.lookup(gpu_name)
    except (ParseError, gpus.UnknownGPU) as err:
        _fail(str(err))


def torch_version(value: str | None, engine: str = "simulate") -> None:
    from sa_profiler.torch_compat import checked_torch_version

    try:
        checked_torch_version(value, engine)
    except ValueError as err:
        _fail(str(err))


def optimizer(name: str) -> None:
    """An unknown name, or one whose package is not installed (`names.optimizer_available`)."""
    if why := names.optimizer_available(name):
        _fail(why)


def accumulation(value: int) -> None:
    try:
        names.accumulation(value)
    except ValueError as err:
        _fail(str(err))


def checkpointing(text: str | None) -> None:
    try:
        names.checkpointing(text)
    except ValueError as err:
        _fail(str(err))


def parallel(world_size: int | None, strategy: str | None, reshard: bool | None, unused: bool = False):
    """The parallel options together, before torch loads: the Parallel they make, or None where
    none was given. One line for a world size below 1, a strategy without a world size (or the
    reverse), resharding without FSDP2, or a strategy the installed torch lacks."""
    from sa_profiler.question import Parallel
    from sa_profiler.torch_compat.versions import installed_version

    if world_size is None and strategy is None and reshard is None and not unused:
        return None
    if unused and strategy != "ddp":
        _fail("--find-unused-parameters is DDP's: give it with --parallel ddp --world-size N")
    if world_size is not None and world_size < 1:
        _fail(f"--world-size must be a positive integer (the number of ranks), got {world_size}")
    if strategy is None:
        _fail(f"--world-size {world_size} needs --parallel ddp or --parallel fsdp" if world_size is not None
              else "--reshard-after-forward is FSDP2's: give it with --parallel fsdp --world-size N")
    if world_size is None:
        _fail(f"--parallel {strategy} needs --world-size N (the number of ranks)")
    if reshard is not None and strategy != "fsdp":
        _fail("--reshard-after-forward is FSDP2's: give it with --parallel fsdp")
    version = installed_version()
    if version and (why := names.strategy_unsupported(strategy, version)):
        _fail(why)
    return Parallel(world_size, strategy, True if reshard is None else reshard, unused)
