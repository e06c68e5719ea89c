"""`sa-profile`: how much memory SAGAN self-attention needs, what fits, and what to use."""

from __future__ import annotations

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


def _fail(message: str):
    raise click.UsageError(message)


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
@click.pass_context
def cli(ctx, shape, gpu_name, gpu_mem, batch, mode, dtypes, impls, headroom, engine, as_json):
    if ctx.invoked_subcommand is not None:
        return
    if shape is None:
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
    target, local = _target(gpu_name, gpu_mem, headroom)
    engine = _engine(engine, local)
    dtype_list = _dtypes(dtypes)
    impl_list = _impls(impls)
    modes = ("forward", "train") if mode == "both" else (mode,)

    from .advise import advise
    from .report.console import advice_json, render_advice

    if c < 8:
        _fail(f"--shape {shape} has {c} channels; the classic layer needs C >= 8 (query/key get C // 8 channels)")
    try:
        result = advise(target, c, h, w, batch=batch, dtypes=dtype_list, modes=modes, impls=impl_list, engine=engine)
    except ValueError as err:
        _fail(str(err))
    if as_json:
        click.echo(json.dumps(advice_json(result), indent=2))
    else:
        from rich.console import Console

        render_advice(result, Console())


def _target(gpu_name, gpu_mem, headroom):
    from . import gpus
    from .recommend import make_target
    from .units import ParseError, parse_bytes

    if gpu_name and gpu_mem:
        _fail("give either --gpu NAME or --gpu-mem SIZE, not both")
    local = False
    try:
        if gpu_mem:
            gpu = gpus.custom(parse_bytes(gpu_mem))
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
    try:
        if headroom.strip().endswith("%"):
            pct = float(headroom.strip()[:-1])
            if not 0 <= pct < 100:
                raise ValueError
            room = pct / 100
            return make_target(gpu, room), local
        return make_target(gpu, parse_bytes(headroom)), local
    except (ValueError, ParseError):
        _fail(f"cannot read --headroom {headroom!r}: expected a percentage such as 10% or a size such as 512M")


def _is_local(gpu) -> bool:
    import torch

    return torch.cuda.is_available() and gpu.name.lower() in torch.cuda.get_device_name().lower()


def _engine(engine: str, local: bool) -> str:
    if engine == "measure" and not local:
        _fail("--engine measure runs on the local CUDA card: give no --gpu/--gpu-mem (or the local card's name) on a machine with one")
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
        out.append(spec)
    return out


@cli.command("gpus")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def gpus_cmd(as_json):
    """The GPU catalogue: memory as torch reports it, compute capability, peak rates."""
    from . import gpus

    if as_json:
        click.echo(json.dumps([{"key": g.key, "name": g.name, "total_memory": g.total_memory,
                                "compute_capability": list(g.capability), "bf16": g.bf16, "sms": g.sms,
                                "fp32_flops": g.fp32_flops, "fp16_flops": g.fp16_flops, "bandwidth": g.bandwidth,
                                "context_bytes": g.context_bytes, "aliases": list(g.aliases), "source": g.source}
                               for g in gpus.CATALOGUE.values()], indent=2))
        return
    from rich.console import Console

    from .report.console import render_gpus

    render_gpus(gpus.CATALOGUE.values(), Console())


@cli.command("doctor")
def doctor_cmd():
    """What this machine has: torch, CUDA, the local card, SDPA backends, and what --engine auto does."""
    import platform

    import torch

    lines = [("sa-profiler", __version__), ("python", platform.python_version()), ("torch", torch.__version__),
             ("CUDA build", torch.version.cuda or "none (CPU build)"), ("CUDA available", str(torch.cuda.is_available()))]
    if torch.cuda.is_available():
        from . import gpus

        props = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info()
        lines += [("device", props.name), ("compute capability", f"{props.major}.{props.minor}"),
                  ("memory", f"{total / 2**30:.2f} GiB total, {free / 2**30:.2f} GiB free"),
                  ("cuDNN", str(torch.backends.cudnn.version())),
                  ("SDPA enabled", ", ".join(n for n, on in (
                      ("flash", torch.backends.cuda.flash_sdp_enabled()),
                      ("efficient", torch.backends.cuda.mem_efficient_sdp_enabled()),
                      ("math", torch.backends.cuda.math_sdp_enabled()),
                      ("cudnn", getattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: False)())) if on)),
                  ("catalogue entry", gpus.local().key),
                  ("--engine auto", "measures on this card when no --gpu/--gpu-mem is given; simulates other targets")]
    else:
        lines += [("--engine auto", "simulates (no local CUDA GPU); --engine measure is unavailable here")]
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        click.echo(f"{k:<{width}}  {v}")


def main():  # console-script entry point
    cli.main(prog_name="sa-profile")


if __name__ == "__main__":
    main()
