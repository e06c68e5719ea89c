"""What the commands share: one-line usage errors, targets and options, pages."""

from __future__ import annotations

import gc
import sys

import click

from sa_profiler.cli.checks import _fail  # noqa: F401 (every command's one-line usage error)


class _OneLineErrors(click.Group):
    """Usage errors as one line on stderr with exit code 2, never a traceback."""

    def main(self, args=None, prog_name=None, **kwargs):
        kwargs.pop("standalone_mode", None)
        from sa_profiler.torch_compat import installed_version, unsupported, untested

        version = installed_version()
        why = unsupported(version)
        if why and not _asks_only_for_help(sys.argv[1:] if args is None else list(args)):
            click.echo(f"sa-profile: error: {why}", err=True)
            sys.exit(2)
        note = untested(version)
        if note:
            click.echo(f"sa-profile: note: {note}", err=True)
        try:
            rv = super().main(args=args, prog_name=prog_name or "sa-profile", standalone_mode=False, **kwargs)
        except click.exceptions.UsageError as err:
            msg = err.format_message().replace("\n", " ")
            click.echo(f"sa-profile: error: {msg}", err=True)
            sys.exit(2)
        except click.exceptions.Abort:
            click.echo("sa-profile: aborted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


def _asks_only_for_help(argv: list[str]) -> bool:
    return any(a in ("-h", "--help", "--version") for a in argv)




def _torch_version_option(f):
    from sa_profiler.torch_compat import SUPPORTED

    return click.option("--torch-version", metavar="X.Y",
                        help=f"Choose SDPA backends as this torch would ({SUPPORTED[0]} to {SUPPORTED[1]}; e.g. "
                             "Colab's); simulation only. Default: the installed one.")(f)


def _torch_version(value: str | None, engine: str = "simulate") -> str | None:
    """`--torch-version X.Y[.Z]` within the supported range (simulations only)."""
    from sa_profiler.torch_compat import checked_torch_version

    try:
        return checked_torch_version(value, engine)
    except ValueError as err:
        _fail(str(err))


def _check_page_path(path: str | None) -> None:
    """Fail before any work when --html cannot be written (a missing or read-only folder, a folder)."""
    import os

    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        _fail(f"cannot write --html {path!r}: it is a folder; expected a file path in an existing folder")
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        _fail(f"cannot write --html {path!r}: {'no such folder' if not os.path.isdir(folder) else 'not writable'}; "
              "expected a file path in an existing folder")


def _write_page(path, write) -> None:
    """Write an HTML page (`write(command)`), or fail in one line if the path cannot be written."""
    import shlex

    try:
        out = write("sa-profile " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    except OSError as err:
        _fail(f"cannot write --html {path!r}: {err.strerror or err}; expected a file path in an existing folder")
    click.echo(f"wrote {out}", err=True)


_ONE_SHOT = False  # set by `main`: this process answers one command, then exits


def _loaded_for_good() -> None:
    """In a one-shot process, what torch's import made lives to the end: `gc.freeze` takes it
    out of the cyclic collector's sight, so a later full collection does not walk it again
    (tens of milliseconds each). Never in a process that merely imports the library."""
    if _ONE_SHOT:
        import torch  # noqa: F401 (the answer needs it next; what its import makes is what to freeze)

        from sa_profiler.torch_compat import import_flop_counter_without_triton

        import_flop_counter_without_triton()  # the time model's formulas, without triton's 0.1 s
        gc.freeze()


def _target(gpu_name, gpu_mem, headroom, emulate=False):
    """The target card; with `emulate` (--engine measure) and --gpu-mem on a CUDA machine, the
    local card capped to that memory (its own architecture, a memory fraction)."""
    from sa_profiler.targets import gpus
    from sa_profiler.units import ParseError, parse_memory

    _loaded_for_good()

    if gpu_name and gpu_mem:
        _fail("give either --gpu NAME or --gpu-mem SIZE, not both")
    local = False
    try:
        if gpu_mem and emulate and _cuda():
            gpu = gpus.resized(gpus.local(), parse_memory(gpu_mem))
            local = gpu.total_memory <= gpus.local().total_memory
            if not local:
                _fail(f"--gpu-mem {gpu_mem} is more than the local card has; measuring can only emulate a smaller card")
            return _with_headroom(gpu, headroom), True
        if gpu_mem:
            gpu = gpus.custom(parse_memory(gpu_mem))
        elif gpu_name:
            gpu = gpus.lookup(gpu_name)
            local = _is_local(gpu)
        else:
            import torch

            if not torch.cuda.is_available():
                _fail("no target: give --gpu NAME (see `sa-profile gpus`) or --gpu-mem SIZE; torch sees no local CUDA GPU")
            gpu, local = gpus.local(), True
    except (ParseError, gpus.UnknownGPU) as err:
        _fail(str(err))
    if local:
        gpu = gpus.local()
    target = _with_headroom(gpu, headroom)
    if target.usable <= 0:
        from sa_profiler.units import format_bytes

        given = f"--gpu-mem {gpu_mem}" if gpu_mem else f"--gpu {gpu_name}"
        _fail(f"{given} leaves no usable memory: {format_bytes(gpu.total_memory)} minus the CUDA context "
              f"({format_bytes(gpu.context_bytes)}) and the headroom ({format_bytes(target.headroom)}); "
              "expected a card's memory such as 12G, 12GiB or 12288MiB")
    return target, local


def _ray_executor(address):
    from sa_profiler.sweeps.executors import ExecutorError, RayExecutor

    try:
        return RayExecutor(address)
    except ExecutorError as err:
        _fail(str(err))


def _ray_targets(ray_executor, gpu_name, gpu_mem, headroom, engine):
    """Targets and engine of a sweep on Ray: a catalogue card measured where the cluster has
    that kind (simulated otherwise, unless --engine measure), every kind with all-workers."""
    from sa_profiler.targets import gpus
    from sa_profiler.sweeps.executors import ExecutorError, cluster_gpu

    name = (gpu_name or "").strip().lower()
    if name == "cpu":
        return _cpu_target(gpu_mem, headroom, engine)
    if gpu_name and gpu_mem:
        _fail("give either --gpu NAME or --gpu-mem SIZE, not both")
    if gpu_mem:
        if engine == "measure":
            _fail("--gpu-mem with --engine measure emulates a card on the local GPU; on Ray, measure the cluster's "
                  "cards with --gpu KIND or --gpu all-workers, or simulate (--engine simulate)")
        target, _ = _target(None, gpu_mem, headroom)
        return [target], "simulate"
    wanted = None
    if name and name != "all-workers":
        try:
            wanted = gpus.lookup(gpu_name)
        except gpus.UnknownGPU as err:
            _fail(str(err))
        if engine == "simulate":
            return [_with_headroom(wanted, headroom)], "simulate"
    if engine == "simulate":
        _fail("--gpu all-workers measures on the cluster's GPUs: use --engine measure (or auto)" if name else
              "no target: give --gpu NAME (see `sa-profile gpus`), --gpu-mem SIZE, cpu or all-workers")
    try:
        kinds = ray_executor.kinds()
    except ExecutorError as err:
        _fail(str(err))
    have = ", ".join(f"{c.kind} x{c.count}" for c in kinds) or "none"
    if wanted is not None:
        match = [c for c in kinds if _same_card(c.gpu, wanted)]
        if match:
            return [_with_headroom(cluster_gpu(match[0]), headroom)], "measure"
        if engine == "measure":
            _fail(f"the Ray cluster has no {wanted.name} to measure on (its GPUs: {have}); simulate with --engine simulate")
        return [_with_headroom(wanted, headroom)], "simulate"
    if not kinds:
        _fail("the Ray cluster has no GPU workers: give --gpu NAME or --gpu-mem SIZE to simulate, or --gpu cpu")
    if name != "all-workers" and len(kinds) > 1:
        _fail(f"the Ray cluster has several GPU kinds ({have}): give --gpu KIND, or --gpu all-workers for each")
    return [_with_headroom(cluster_gpu(c), headroom) for c in kinds], "measure"


def _cpu_target(gpu_mem, headroom, engine):
    """`--gpu cpu`: this machine's CPU and memory, measured unless --engine simulate."""
    from sa_profiler.targets import gpus

    if gpu_mem:
        _fail("give either --gpu cpu or --gpu-mem SIZE, not both")
    return [_with_headroom(gpus.host(), headroom)], "measure" if engine == "auto" else engine


def _same_card(probed, wanted) -> bool:
    from sa_profiler.targets import gpus

    try:
        return gpus.lookup(probed.name).key == wanted.key
    except gpus.UnknownGPU:
        return False


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _with_headroom(gpu, headroom):
    from sa_profiler.cli import checks
    from sa_profiler.question import make_question

    return make_question(gpu, checks.headroom(headroom)[1])


def _question(target, engine: str, torch_version: str | None, **more):
    """The question's value, whole, built here at the edge: the card and headroom of `target`,
    the engine, the torch whose rules apply (`--torch-version`, else the installed one), and any
    of amp, optimizer and parallel."""
    from sa_profiler.question import make_question

    try:
        return make_question(target.card, target.headroom, torch_version=torch_version, engine=engine, **more)
    except ValueError as err:
        _fail(str(err))


def _is_local(gpu) -> bool:
    import torch

    return torch.cuda.is_available() and gpu.name.lower() in torch.cuda.get_device_name().lower()


def _engine(engine: str, local: bool) -> str:
    if engine == "measure" and not local:
        _fail("--engine measure runs on the local CUDA card: give no --gpu (or the local card's name), or --gpu-mem "
              "to emulate a smaller card, on a machine with one")
    if engine == "auto":
        return "measure" if local else "simulate"
    return engine
