"""`sa-profile`: how much memory SAGAN self-attention needs, what fits, and what to use."""

from __future__ import annotations

import gc
import json
import sys

import click

from . import __version__

HELP = """Memory and time of SAGAN-style self-attention on a GPU, before it runs out.

\b
  sa-profile --gpu-mem 12G --shape 128x256x256
  sa-profile --gpu t4 --shape 128x256x256 --mode train --dtype fp16
  sa-profile --gpu-mem 15360MiB --shape 64x64x64 --batch 32 --json

For a feature map C x H x W on a target GPU, every implementation (the classic layer,
scaled_dot_product_attention with each backend the card can run, chunked attention),
dtype and mode: the peak memory of one image, the largest batch that fits with the
headroom, an estimated time per step, a recommendation with the line of code to change,
why the classic layer runs out (the N x N tensors at its peak, N = H*W), and alternatives
when nothing fits. Memory sizes are binary: 12G = 12GB = 12GiB = 12 x 2^30 bytes.
Numbers come from the simulator (no GPU needed) or, on the local CUDA card, measurement.
"""


class _OneLineErrors(click.Group):
    """Usage errors as one line on stderr with exit code 2, never a traceback."""

    def main(self, args=None, prog_name=None, **kwargs):
        kwargs.pop("standalone_mode", None)
        from .torch_compat import installed_version, unsupported

        why = unsupported(installed_version())
        if why and not _asks_only_for_help(sys.argv[1:] if args is None else list(args)):
            click.echo(f"sa-profile: error: {why}", err=True)
            sys.exit(2)
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


def _fail(message: str):
    raise click.UsageError(message)


def _torch_version_option(f):
    from .torch_compat import SUPPORTED

    return click.option("--torch-version", metavar="X.Y",
                        help=f"Choose SDPA backends as this torch would ({SUPPORTED[0]} to {SUPPORTED[1]}; e.g. "
                             "Colab's); simulation only. Default: the installed one.")(f)


@click.group(cls=_OneLineErrors, invoke_without_command=True, help=HELP,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sa-profile")
@click.option("--shape", metavar="CxHxW", help="Feature map: CxHxW, C,H,W, or BxCxHxW (sets the batch too).")
@click.option("--gpu", "gpu_name", metavar="NAME", help="A GPU from the catalogue (see `sa-profile gpus`), e.g. t4, a100-80gb.")
@click.option("--gpu-mem", metavar="SIZE", help="A GPU by memory size (binary units: 12G = 12 GiB); assumes an Ampere card (sm86).")
@click.option("--batch", type=int, metavar="B", help="Check this batch. Default: find the largest that fits.")
@click.option("--mode", type=click.Choice(["forward", "train", "both"]), default="both", show_default=True,
              help="forward = inference under no_grad; train = forward + backward.")
@click.option("--dtype", "dtypes", metavar="LIST", help="Comma list of fp32, fp16, bf16, fp64. Default: fp32, fp16 and bf16 where the target supports it.")
@click.option("--impl", "impls", metavar="LIST", help="Comma list of reference, sdpa, sdpa:BACKEND, chunked, pooled. Default: reference, sdpa (with each runnable backend), chunked.")
@click.option("--headroom", default="10%", show_default=True, metavar="PCT|SIZE",
              help="Safety margin kept free: a percentage of the card's memory or a size such as 512M "
                   "(covers what the simulator does not model, chiefly cuDNN convolution workspaces).")
@click.option("--engine", type=click.Choice(["auto", "simulate", "measure"]), default="auto", show_default=True,
              help="auto measures on the local CUDA card when it is the target, and simulates otherwise.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of tables.")
@click.option("--html", "html_out", metavar="FILE", type=click.Path(dir_okay=False),
              help="Also write the answer as a self-contained HTML page (opens offline).")
@_torch_version_option
@click.pass_context
def cli(ctx, shape, gpu_name, gpu_mem, batch, mode, dtypes, impls, headroom, engine, as_json, html_out, torch_version):
    if ctx.invoked_subcommand is not None:
        return
    if shape is None:
        given = [p.opts[0] for p in ctx.command.params
                 if p.name != "shape" and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE]
        if given:  # a question without its feature map
            _fail(f"--shape is missing (given: {' '.join(given)}): the feature map to answer for, CxHxW, "
                  "e.g. --shape 128x256x256")
        click.echo(ctx.get_help())
        return
    from .units import ParseError, parse_shape

    try:
        b, c, h, w = parse_shape(shape)
    except ParseError as err:
        _fail(str(err))
    if batch is not None and b is not None and batch != b:
        _fail(f"--batch {batch} contradicts the batch {b} in --shape {shape}")
    batch = batch if batch is not None else b
    if batch is not None and batch < 1:
        _fail(f"--batch must be a positive integer, got {batch}")
    _check_page_path(html_out)
    target, local = _target(gpu_name, gpu_mem, headroom, emulate=engine == "measure")
    engine = _engine(engine, local)
    torch_version = _torch_version(torch_version, engine)
    dtype_list = _dtypes(dtypes)
    impl_list = _impls(impls)
    modes = ("forward", "train") if mode == "both" else (mode,)

    from .advise import advise
    from .report.console import advice_json, render_advice

    if c < 8:
        _fail(f"--shape {shape} has {c} channels; the classic layer needs C >= 8 (query/key get C // 8 channels)")
    from .attention.backends import assume_torch

    with assume_torch(torch_version):
        try:
            result = advise(target, c, h, w, batch=batch, dtypes=dtype_list, modes=modes, impls=impl_list,
                            engine=engine, torch_version=torch_version)
        except ValueError as err:
            _fail(str(err))
        if as_json:
            click.echo(json.dumps(advice_json(result), indent=2))
        else:
            from rich.console import Console

            render_advice(result, Console())
        if html_out:
            from .report.advice_html import write_html

            _write_page(html_out, lambda command: write_html(result, html_out, command))


def _torch_version(value: str | None, engine: str = "simulate") -> str | None:
    """`--torch-version X.Y[.Z]` within the supported range (simulations only)."""
    from .attention.backends import checked_torch_version

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
        gc.freeze()


def _target(gpu_name, gpu_mem, headroom, emulate=False):
    """The target card; with `emulate` (--engine measure) and --gpu-mem on a CUDA machine, the
    local card capped to that memory (its own architecture, a memory fraction)."""
    from . import gpus
    from .units import ParseError, parse_memory

    _loaded_for_good()  # torch is imported now

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
        from .units import format_bytes

        given = f"--gpu-mem {gpu_mem}" if gpu_mem else f"--gpu {gpu_name}"
        _fail(f"{given} leaves no usable memory: {format_bytes(gpu.total_memory)} minus the CUDA context "
              f"({format_bytes(gpu.context_bytes)}) and the headroom ({format_bytes(target.headroom)}); "
              "expected a card's memory such as 12G, 12GiB or 12288MiB")
    return target, local


def _ray_executor(address):
    from .executors import ExecutorError, RayExecutor

    try:
        return RayExecutor(address)
    except ExecutorError as err:
        _fail(str(err))


def _ray_targets(runner, gpu_name, gpu_mem, headroom, engine):
    """Targets and engine of a sweep on Ray: a catalogue card measured where the cluster has
    that kind (simulated otherwise, unless --engine measure), every kind with all-workers."""
    from . import gpus
    from .executors import ExecutorError, cluster_gpu

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
        kinds = runner.kinds()
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
    from . import gpus

    if gpu_mem:
        _fail("give either --gpu cpu or --gpu-mem SIZE, not both")
    return [_with_headroom(gpus.host(), headroom)], "measure" if engine == "auto" else engine


def _same_card(probed, wanted) -> bool:
    from . import gpus

    try:
        return gpus.lookup(probed.name).key == wanted.key
    except gpus.UnknownGPU:
        return False


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _with_headroom(gpu, headroom):
    from .recommend import make_target
    from .units import ParseError, parse_bytes

    try:
        if headroom.strip().endswith("%"):
            pct = float(headroom.strip()[:-1])
            if not 0 <= pct < 100:
                raise ValueError
            return make_target(gpu, pct / 100)
        return make_target(gpu, parse_bytes(headroom))
    except (ValueError, ParseError):
        _fail(f"cannot read --headroom {headroom!r}: expected a percentage such as 10% or a size such as 512M")


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


def _dtypes(text):
    if not text:
        return None
    from .engine.workload import dtype_name

    try:
        return [dtype_name(d.strip()) for d in text.split(",") if d.strip()]
    except ValueError as err:
        _fail(str(err))


def _impls(text):
    if not text:
        return None
    from .attention import BACKENDS, IMPLEMENTATIONS

    out = []
    for spec in (s.strip() for s in text.split(",") if s.strip()):
        name, _, backend = spec.partition(":")
        if name == "all":
            return None
        if name not in IMPLEMENTATIONS:
            _fail(f"unknown implementation {spec!r}; expected {', '.join(IMPLEMENTATIONS)} or sdpa:BACKEND")
        if backend and (name != "sdpa" or backend not in BACKENDS):
            _fail(f"unknown implementation {spec!r}; a backend goes with sdpa only: sdpa:{'|'.join(BACKENDS)}")
        if spec not in out:  # a repeated implementation is one row, not two
            out.append(spec)
    return out


@cli.command("gpus")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def gpus_cmd(as_json):
    """The GPU catalogue: memory as torch reports it, compute capability, SMs, shared memory per
    block, peak rates, and where each figure comes from."""
    from . import gpus

    if as_json:
        click.echo(json.dumps([{"key": g.key, "name": g.name, "total_memory": g.total_memory,
                                "compute_capability": list(g.capability), "bf16": g.bf16, "sms": g.sms,
                                "smem_per_block": g.smem_per_block,
                                "fp32_flops": g.fp32_flops, "fp16_flops": g.fp16_flops, "bandwidth": g.bandwidth,
                                "context_bytes": g.context_bytes, "aliases": list(g.aliases), "source": g.source,
                                "sources": g.provenance(), "offered_by": g.offered_by}
                               for g in gpus.CATALOGUE.values()], indent=2))
        return
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from .report.console import _numbers_whole, render_gpus

    console = Console()
    render_gpus(gpus.CATALOGUE.values(), console)
    table = Table(title="Where each figure comes from", title_justify="left", box=box.SIMPLE_HEAD, header_style="bold")
    for col in ("key", "SMs", "smem/block", "memory", "SMs from", "rates from", "offered by"):
        table.add_column(col, justify="right" if col in ("SMs", "smem/block") else "left")
    for g in gpus.CATALOGUE.values():
        src = g.provenance()
        table.add_row(escape(g.key), str(g.sms), f"{g.smem_per_block // 1024} KiB", escape(src["total_memory"]),
                      escape(src["sms"]), escape(src["rates"]), escape(g.offered_by or "-"))
    console.print(_numbers_whole(table))
    console.print(f"[dim]CC: {escape(gpus.CC_SOURCE)}. smem/block: the shared memory a block may opt into "
                  f"(sharedMemPerBlockOptin), {escape(gpus.SMEM_SOURCE)}; it decides which memory-efficient "
                  "backward kernel runs.[/]")


@cli.command("doctor")
def doctor_cmd():
    """What this machine has: torch, CUDA, the local card, SDPA backends, and what --engine auto does."""
    import platform

    import torch

    from .attention.routing import enabled_backends
    from .torch_compat import SUPPORTED, unsupported

    lines = [("sa-profiler", __version__), ("python", platform.python_version()),
             ("torch", f"{torch.__version__} ({unsupported(torch.__version__) or f'in the supported range {SUPPORTED[0]} to {SUPPORTED[1]}'})"),
             ("CUDA build", torch.version.cuda or "none (CPU build)"), ("CUDA available", str(torch.cuda.is_available())),
             ("SDPA backends enabled", ", ".join(enabled_backends()) + " (torch.backends.cuda flags; simulations honour them)")]
    if torch.cuda.is_available():
        from . import gpus

        props = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info()
        lines += [("device", props.name), ("compute capability", f"{props.major}.{props.minor}"),
                  ("memory", f"{total / 2**30:.2f} GiB total, {free / 2**30:.2f} GiB free"),
                  ("cuDNN", str(torch.backends.cudnn.version())),
                  ("catalogue entry", gpus.local().key),
                  ("--engine auto", "measures on this card when no --gpu/--gpu-mem is given; simulates other targets")]
    else:
        lines += [("--engine auto", "simulates (no local CUDA GPU); --engine measure is unavailable here")]
    from importlib.util import find_spec

    if find_spec("ray") is None:
        lines += [("ray", 'not installed (sweeps on a Ray cluster: pip install -e ".[ray]" in the repository)')]
    else:
        from importlib.metadata import PackageNotFoundError, version

        try:
            lines += [("ray", f"{version('ray')} (sweep --executor ray)")]
        except PackageNotFoundError:
            lines += [("ray", "importable (sweep --executor ray)")]
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        click.echo(f"{k:<{width}}  {v}")


@cli.command("sweep")
@click.option("--batch", "batches", default="1", show_default=True, metavar="LIST", help="Batches: 1,2,4,8 or 1:64:x2.")
@click.option("--channels", default="64", show_default=True, metavar="LIST", help="Channels C: 64,128 or 32:256:x2.")
@click.option("--res", default="32:128:x2", show_default=True, metavar="LIST",
              help="Resolutions: R (square) or HxW, lists and ranges: 32:256:x2, 32:256:+32, 64x128.")
@click.option("--impl", "impls", default="all", show_default=True, metavar="LIST",
              help="reference, sdpa, sdpa:BACKEND, chunked, pooled; all = reference, sdpa, chunked.")
@click.option("--dtype", "dtypes", default="fp32", show_default=True, metavar="LIST", help="fp32, fp16, bf16, fp64.")
@click.option("--mode", type=click.Choice(["forward", "train", "both"]), default="both", show_default=True)
@click.option("--gpu", "gpu_name", metavar="NAME",
              help="A GPU from the catalogue (`sa-profile gpus`), cpu (this machine's CPU), or with --executor ray "
                   "all-workers (measure on every GPU kind of the cluster).")
@click.option("--gpu-mem", metavar="SIZE", help="A GPU by memory size (binary units).")
@click.option("--headroom", default="10%", show_default=True, metavar="PCT|SIZE", help="Safety margin kept free.")
@click.option("--engine", type=click.Choice(["auto", "simulate", "measure"]), default="auto", show_default=True,
              help="auto measures when the target is at hand (the local card or CPU; with Ray, a GPU kind of the "
                   "cluster), and simulates otherwise.")
@click.option("--out", required=True, metavar="DIR", help="Folder for results.csv, results.json and report.html.")
@click.option("--resume", is_flag=True, help="Finish a sweep in --out: rows already there are not run again "
              "(rows whose worker died are).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: one workload at a time here; ray: each workload a task on a Ray cluster "
                   "(pip install -e \".[ray]\" in the repository).")
@click.option("--ray-address", metavar="auto|HOST:PORT",
              help="The Ray cluster to join (default: RAY_ADDRESS, else a new one on this machine).")
@_torch_version_option
def sweep_cmd(batches, channels, res, impls, dtypes, mode, gpu_name, gpu_mem, headroom, engine, out, resume, executor,
              ray_address, torch_version):
    """Run a grid of batch x channels x resolution x implementation x dtype x mode.

    Each row is written to DIR/results.csv as soon as it is done (a crash loses at most the
    running one; --resume finishes the rest). Out-of-memory and unsupported workloads are rows
    with their status; after an OOM, larger batches of that configuration are skipped. At the
    end: DIR/results.json and DIR/report.html, a self-contained report that opens offline.
    """
    from .grid import parse_ints, parse_resolutions
    from .units import ParseError

    try:
        batch_list = parse_ints(batches, "batches")
        channel_list = parse_ints(channels, "channels")
        res_list = parse_resolutions(res)
    except ParseError as err:
        _fail(str(err))
    if min(channel_list) < 8:
        _fail(f"--channels {channels} has a value below 8; the classic layer needs C >= 8")
    import os

    if os.path.exists(out) and not os.path.isdir(out):
        _fail(f"--out {out!r} is a file; expected a folder for the sweep's files (a new one, or one a sweep wrote)")
    torch_version = _torch_version(torch_version)
    runner = None
    if executor == "ray":
        runner = _ray_executor(ray_address)
        target_list, engine = _ray_targets(runner, gpu_name, gpu_mem, headroom, engine)
    elif gpu_name and gpu_name.strip().lower() == "all-workers":
        _fail("--gpu all-workers measures on every GPU kind of a Ray cluster: add --executor ray")
    elif gpu_name and gpu_name.strip().lower() == "cpu":
        target_list, engine = _cpu_target(gpu_mem, headroom, engine)
    else:
        target, local = _target(gpu_name, gpu_mem, headroom, emulate=engine == "measure")
        target_list, engine = [target], _engine(engine, local)
    from .engine.workload import DTYPES

    dtype_list = _dtypes(dtypes) or ["float32"]
    for target in target_list:
        for d in dtype_list:
            why = target.gpu.supports(DTYPES[d])
            if why:
                _fail(f"{d} cannot run on this target: {why}")
    specs = _impls(impls) or ["reference", "sdpa", "chunked"]
    impl_list = []
    for spec in specs:
        name, _, backend = spec.partition(":")
        impl_list.append((name, {"backend": backend} if backend else ({"pool": 2} if name == "pooled" else {})))
    modes = ["forward", "train"] if mode == "both" else [mode]

    import shlex

    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from . import batch_search
    from . import sweep as sweeping
    from .attention.backends import assume_torch
    from .executors import ExecutorError
    from .lock import FolderBusy, folder_lock
    from .report.html import write_report

    try:
        spec = sweeping.Sweep(target_list, impl_list, dtype_list, modes, channel_list, res_list, batch_list, engine,
                              command="sa-profile " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                              torch_version=torch_version)
    except sweeping.SweepError as err:
        _fail(str(err))
    console = Console(stderr=True)
    try:
        with folder_lock(out):  # one writer per folder: the grid, the batch search and the report
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          console=console, transient=True) as progress:
                task = progress.add_task("sweep", total=len(spec))

                def on_row(w, rec, skipped):
                    status = "resumed" if skipped else rec.status
                    progress.update(task, advance=1, description=escape(
                        f"{w.label} {w.dtype} {w.mode} B={w.batch} C={w.channels} {w.height}x{w.width}: {status}"))

                try:
                    rows = sweeping.run(spec, out, resume=resume, on_row=on_row, executor=runner,
                                        on_note=lambda note: console.print(f"note: {note}", markup=False,
                                                                           highlight=False))
                except (sweeping.SweepError, ExecutorError) as err:
                    _fail(str(err))
                except KeyboardInterrupt:
                    click.echo(f"sa-profile: interrupted; the rows done are in {out}/results.csv: finish with --resume",
                               err=True)
                    sys.exit(130)
                progress.update(task, description="largest batch of each configuration (the engine's search)")
                with assume_torch(torch_version):  # the largest batches as the grid's rows: as that torch chooses
                    batch_search.write(batch_search.search(rows), out)
            report = write_report(f"{out}/results.csv")
    except FolderBusy as err:
        if runner is not None:
            runner.close()
        _fail(str(err))
    _sweep_summary(rows, Console())
    click.echo(f"wrote {out}/results.csv, {out}/results.json, {out}/{batch_search.LARGEST} and {report}")


def _sweep_summary(rows, console) -> None:
    import pandas as pd
    from rich.markup import escape
    from rich.table import Table

    from .units import format_bytes

    import json

    frame = pd.DataFrame(rows)
    frame["total"] = pd.to_numeric(frame.total_bytes, errors="coerce")
    frame["tokens"] = pd.to_numeric(frame.tokens)
    frame["options"] = [  # one group per implementation and backend / checkpointing, whatever the chunk
        " ".join(f"{k}={v}" for k, v in json.loads(o or "{}").items() if k in ("backend", "checkpoint", "pool"))
        for o in frame.options]
    table = Table(title="Sweep summary", title_justify="left", header_style="bold")
    for col in ("implementation", "dtype", "mode", "rows", "ok", "oom", "skipped", "largest N that fits", "peak there"):
        table.add_column(col, justify="left" if col in ("implementation", "dtype", "mode") else "right")
    for (impl, opts, dtype, mode), g in frame.groupby(["impl", "options", "dtype", "mode"], sort=False):
        ok = g[g.status == "ok"]
        top = ok.sort_values(["tokens", "total"]).iloc[-1] if len(ok) else None
        label = impl + (f" [{opts}]" if opts else "")
        counts = g.status.value_counts()
        table.add_row(escape(label), dtype, mode, str(len(g)), str(counts.get("ok", 0)), str(counts.get("oom", 0)),
                      str(counts.get("skipped", 0)), str(int(top.tokens)) if top is not None else "-",
                      format_bytes(top.total) if top is not None and top.total == top.total else "-")
    console.print(table)


@cli.command("fit")
@click.argument("model", metavar="MODEL")
@click.option("--input", "input_specs", multiple=True, metavar="[NAME=]SHAPE[:DTYPE][:VALUES]",
              help="One input per sample (repeatable, positional in order, or NAME= for a keyword argument): "
                   "an image CxHxW, a vector N, B (one value per sample) or scalar (one for the batch); "
                   "DTYPE float32 (default), float16, bfloat16, int64, int32 or bool; VALUES ones, zeros, pad=F "
                   "(a padded mask), range=LO..HI or file=PATH. "
                   "E.g. --input 3x64x64 --input timestep=scalar:int64 --input attention_mask=128:int64:pad=0.25. "
                   "A library model has a default.")
@click.option("--batch", type=int, default=1, show_default=True, metavar="B",
              help="Samples per training step (the first dimension of every input).")
@click.option("--gpu", "gpu_name", metavar="NAME", help="A GPU from the catalogue (`sa-profile gpus`), or cpu for this machine.")
@click.option("--gpu-mem", metavar="SIZE", help="A GPU by memory size (binary units).")
@click.option("--optimizer", default="adam", show_default=True, metavar="NAME", help="sgd, sgd-momentum, adam or adamw.")
@click.option("--amp", type=click.Choice(["fp16", "bf16"]), help="Mixed precision (autocast with a grad scaler).")
@click.option("--checkpointing", is_flag=True, help="Pass checkpointing=True to the model's factory (models that support it).")
@click.option("--find-max-batch", is_flag=True, help="Also find the largest batch that fits (a search on the engine).")
@click.option("--arg", "args", multiple=True, metavar="KEY=VALUE", help="A factory or config argument (repeatable); numbers, lists and tuples are read as Python literals.")
@click.option("--headroom", default="10%", show_default=True, metavar="PCT|SIZE", help="Safety margin kept free.")
@click.option("--engine", type=click.Choice(["simulate", "measure"]), default="simulate", show_default=True,
              help="simulate (any target), or measure: run the step for real on this CPU under the tracker (--gpu cpu).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--html", "html_out", metavar="FILE", type=click.Path(dir_okay=False),
              help="Also write a self-contained HTML page: the step's memory timeline, the tensors at the peak, the "
                   "breakdowns and each conversion side by side (with --amp, the float32 step overlaid).")
@_torch_version_option
def fit_cmd(model, input_specs, batch, gpu_name, gpu_mem, optimizer, amp, checkpointing, find_max_batch, args, headroom,
            engine, as_json, html_out, torch_version):
    """Will this whole model train on that GPU at that batch? A training step, simulated.

    MODEL is FILE.py:NAME or module:NAME (a class or factory), timm:NAME, torchvision:NAME,
    transformers:MODEL_TYPE (e.g. bert, gpt2, vit; --arg overrides its default config),
    diffusers:CLASS (e.g. UNet2DConditionModel; --arg gives config values), or a model folder
    with a config.json (its weights are not read).

    Builds the model on the meta device (no memory), runs forward, a loss, backward and the
    optimizer step under the memory tracker, and reports the peak, whether it fits, a
    breakdown by category and by top-level module, the attention layers' share and the
    SDPA backend each attention module runs on the target, and the peak after converting
    the SAGAN layers to each efficient implementation.
    """
    from .fit import FitError, fit, load, parse_inputs

    if batch < 1:
        _fail(f"--batch must be a positive integer, got {batch}")
    _check_page_path(html_out)
    torch_version = _torch_version(torch_version, engine)
    kwargs = {}
    for item in args:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"cannot read --arg {item!r}: expected KEY=VALUE")
        kwargs[key] = _literal(value)
    if checkpointing:
        kwargs["checkpointing"] = True
    if gpu_name and gpu_name.strip().lower() == "cpu":
        target, _ = _cpu_target(gpu_mem, headroom, engine)
        target = target[0]
    else:
        if engine == "measure":
            _fail("--engine measure runs the step on this CPU: add --gpu cpu "
                  "(CUDA steps are measured on the card by benchmarks/validate_fit_cuda.py)")
        target, _ = _target(gpu_name, gpu_mem, headroom) if (gpu_name or gpu_mem) else _target("t4", None, headroom)
    try:
        factory = load(model, kwargs)
        input_specs = input_specs or getattr(factory, "default_inputs", None)
        if not input_specs:
            _fail(f"{model} needs its inputs: give --input [NAME=]SHAPE[:DTYPE] for each (e.g. --input 3x224x224)")
        specs = parse_inputs(list(input_specs))
        result = fit(factory, specs, batch, target, optimizer=optimizer, amp=amp, find_max_batch=find_max_batch,
                     name=model, engine=engine, compare_fp32=bool(html_out and amp), torch_version=torch_version)
    except FitError as err:
        _fail(str(err))
    if html_out:
        from .report.fit_html import write_html

        _write_page(html_out, lambda command: write_html(result, html_out, command))
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    from rich.console import Console

    from .report.console import render_fit

    render_fit(result, Console())


def _literal(value: str):
    """An --arg value: a Python literal (number, list, tuple, string in quotes), true/false/none,
    or else the text as it is."""
    import ast

    lowered = {"true": True, "false": False, "none": None}
    if value.lower() in lowered:
        return lowered[value.lower()]
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


@cli.command("report")
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--out", metavar="FILE", help="Where to write the HTML (default: report.html beside RESULTS).")
def report_cmd(results, out):
    """Rebuild the self-contained HTML report from a results CSV (and largest.csv beside it, when missing)."""
    import os

    from .report.html import write_report

    if not os.path.isfile(results):
        _fail(f"no such results file: {results!r}; expected the results.csv of a sweep")
    try:
        path = write_report(results, out, on_note=lambda note: click.echo(f"note: {note}", err=True))
    except KeyError as err:
        _fail(f"cannot read {results!r} as a sweep results table: it has no {err.args[0]!r} column; "
              "expected the results.csv of a sweep")
    except ValueError as err:
        _fail(f"cannot read {results!r} as a sweep results table: {err}; expected the results.csv of a sweep")
    click.echo(f"wrote {path}")


def main():  # console-script entry point; an identical question asked before is answered from the cache
    from .answer_cache import answered

    global _ONE_SHOT
    _ONE_SHOT = True
    answered(sys.argv[1:], lambda: cli.main(prog_name="sa-profile"))


if __name__ == "__main__":
    main()
