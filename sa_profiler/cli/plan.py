"""`sa-profile plan MODEL --input ... --batch B --gpu NAME`: what to change so a global batch trains."""

from __future__ import annotations

import json

import click

from sa_profiler.cli.common import (_check_page_path, _cpu_target, _fail, _question, _target, _torch_version_option,
                                    _write_page)
from sa_profiler.cli.fit import factory_args
from sa_profiler.cli.headline import cli

from sa_profiler.names import PLAN_KINDS as KINDS


@cli.command("plan")
@click.argument("model", metavar="MODEL")
@click.option("--input", "input_specs", multiple=True, metavar="[NAME=]SHAPE[:DTYPE][:VALUES]",
              help="One input per sample, as `sa-profile fit` takes them. A library model has a default.")
@click.option("--batch", type=int, required=True, metavar="B", help="The global batch to train: samples per optimizer step.")
@click.option("--gpu", "gpu_name", metavar="NAME", help="A GPU from the catalogue (`sa-profile gpus`), or cpu.")
@click.option("--gpu-mem", metavar="SIZE", help="A GPU by memory size (binary units).")
@click.option("--optimizer", default="adam", show_default=True, metavar="NAME", help="Yours: sgd, sgd-momentum, adam or adamw.")
@click.option("--amp", type=click.Choice(["fp16", "bf16"]), help="Your precision, if you train with AMP already.")
@click.option("--world-size", type=int, metavar="N",
              help="Train over N ranks: B is split over them, and DDP and FSDP2 join the search.")
@click.option("--parallel", "strategy", type=click.Choice(["ddp", "fsdp"]),
              help="Your strategy over the ranks, if you have one (the search still tries the others).")
@click.option("--find-unused-parameters", "unused", is_flag=True,
              help="DDP's find_unused_parameters=True, for a model with parameters the loss does not reach.")
@click.option("--try", "tries", metavar="LIST", help=f"Kinds of change to search (default: all): {', '.join(KINDS)}.")
@click.option("--arg", "args", multiple=True, metavar="KEY=VALUE", help="A factory or config argument (repeatable).")
@click.option("--headroom", default="10%", show_default=True, metavar="PCT|SIZE", help="Safety margin kept free.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--html", "html_out", metavar="FILE", type=click.Path(dir_okay=False),
              help="Also write the plans as a self-contained HTML page.")
@_torch_version_option
def plan_cmd(model, input_specs, batch, gpu_name, gpu_mem, optimizer, amp, world_size, strategy, unused, tries, args,
             headroom, as_json, html_out, torch_version):
    """The configurations that train a global batch of B on the card, fastest first.

    Searches micro-batch x gradient accumulation (keeping B), precision (float32, AMP fp16 with
    a grad scaler, AMP bf16 where the card has it), attention (the SAGAN conversions, the library's
    fused switch), activation checkpointing of the repeated blocks (all, every second, selective),
    the optimizer, and with --world-size N, DDP or FSDP2 (with and without resharding), each simulated as `sa-profile fit` runs it. Prints the plans that fit with
    their peak, estimated time and samples per second, whether each trains the same thing, and the
    top plan as code; when nothing fits, what comes closest.
    """
    from sa_profiler.cli import checks

    checks.batch(batch)
    checks.headroom(headroom)
    checks.card(gpu_name, gpu_mem, cpu_allowed=True)
    checks.optimizer(optimizer)
    checks.torch_version(torch_version)
    if world_size is not None and strategy is None:  # the search picks the strategy: DDP to start from
        strategy = "ddp" if world_size > 1 else None
        world_size = None if world_size == 1 else world_size
    setting = checks.parallel(world_size, strategy, None, unused)
    if setting is not None and batch % setting.world_size:
        _fail(f"--batch {batch} does not split over {setting.world_size} ranks: give a multiple of {setting.world_size}")
    _check_page_path(html_out)
    kinds = tuple(k.strip() for k in (tries or ",".join(KINDS)).split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        _fail(f"--try {tries!r}: unknown kind {', '.join(unknown) or '(none given)'}; expected a comma list of "
              f"{', '.join(KINDS)}")

    from sa_profiler.models.fit import FitError, load, parse_inputs
    from sa_profiler.models.library_models import LibraryError
    from sa_profiler.models.plan import plan

    kwargs = factory_args(args)
    if gpu_name and gpu_name.strip().lower() == "cpu":
        target = _cpu_target(gpu_mem, headroom, "simulate")[0][0]
    else:
        target, _ = _target(gpu_name, gpu_mem, headroom) if (gpu_name or gpu_mem) else _target("t4", None, headroom)
    question = _question(target, "simulate", torch_version, amp=amp, optimizer=optimizer,
                         **({"parallel": setting} if setting else {}))
    try:
        factory = load(model, kwargs)
        input_specs = input_specs or getattr(factory, "default_inputs", None)
        if not input_specs:
            _fail(f"{model} needs its inputs: give --input [NAME=]SHAPE[:DTYPE] for each (e.g. --input 3x64x64)")
        result = plan(factory, parse_inputs(list(input_specs)), batch, question, name=model, tries=kinds)
    except (FitError, LibraryError) as err:
        _fail(str(err))
    from sa_profiler.report.plan_views import plan_html, plan_json, render_plan

    if html_out:
        _write_page(html_out, lambda command: plan_html(result, html_out, command))
    if as_json:
        click.echo(json.dumps(plan_json(result), indent=2))
        return
    from rich.console import Console

    render_plan(result, Console())
