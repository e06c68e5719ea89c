"""The headline: `sa-profile --gpu NAME|--gpu-mem SIZE --shape CxHxW` (the command group itself)."""

from __future__ import annotations

import json

import click

from sa_profiler import __version__
from sa_profiler.cli.common import (
    _OneLineErrors, _check_page_path, _engine, _fail, _question, _target, _torch_version_option, _write_page,
)


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
    from sa_profiler.units import ParseError, parse_shape

    try:
        b, c, h, w = parse_shape(shape)
    except ParseError as err:
        _fail(str(err))
    if batch is not None and b is not None and batch != b:
        _fail(f"--batch {batch} contradicts the batch {b} in --shape {shape}")
    batch = batch if batch is not None else b
    from sa_profiler.cli import checks

    checks.batch(batch)
    checks.headroom(headroom)
    dtype_list = checks.dtypes(dtypes)
    impl_list = checks.impls(impls)
    checks.card(gpu_name, gpu_mem)
    checks.torch_version(torch_version, "measure" if engine == "measure" else "simulate")
    _check_page_path(html_out)
    target, local = _target(gpu_name, gpu_mem, headroom, emulate=engine == "measure")
    question = _question(target, _engine(engine, local), torch_version)
    modes = ("forward", "train") if mode == "both" else (mode,)

    from sa_profiler.advice.advise import advise
    from sa_profiler.report.console import advice_json, render_advice

    if c < 8:
        _fail(f"--shape {shape} has {c} channels; the classic layer needs C >= 8 (query/key get C // 8 channels)")
    try:
        result = advise(question, c, h, w, batch=batch, dtypes=dtype_list, modes=modes, impls=impl_list)
    except ValueError as err:
        _fail(str(err))
    if as_json:
        click.echo(json.dumps(advice_json(result), indent=2))
    else:
        from rich.console import Console

        render_advice(result, Console())
    if html_out:
        from sa_profiler.report.advice_html import write_html

        _write_page(html_out, lambda command: write_html(result, html_out, command))
