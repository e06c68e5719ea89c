"""`sa-profile fit`: will this whole model train on that GPU at that batch?"""

from __future__ import annotations

import json

import click

from sa_profiler.cli.common import (
    _check_page_path, _cpu_target, _fail, _question, _target, _torch_version_option,
    _write_page,
)
from sa_profiler.cli.headline import cli


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
@click.option("--optimizer", default="adam", show_default=True, metavar="NAME",
              help="sgd, sgd-momentum, adam, adamw, adam-fused, adamw-fused (fused=True), adafactor "
                   "(transformers') or adamw8bit (bitsandbytes).")
@click.option("--amp", type=click.Choice(["fp16", "bf16"]), help="Mixed precision (autocast with a grad scaler).")
@click.option("--accumulation", type=int, default=1, show_default=True, metavar="K",
              help="Gradient accumulation: K micro-steps of --batch (forward, loss / K, backward) per optimizer step.")
@click.option("--checkpointing", metavar="all|every-K|selective",
              help="Activation checkpointing of the model's repeated blocks (the children of its outermost "
                   "ModuleList/Sequential of blocks of one class): all, every K-th from the first, or selective "
                   "(torch's selective checkpointing: matrix products' and SDPA's outputs kept, the rest recomputed).")
@click.option("--sdpa-backend", type=click.Choice(["flash", "efficient", "cudnn", "math"]),
              help="Force one scaled_dot_product_attention backend, as torch.nn.attention.sdpa_kernel does.")
@click.option("--model-checkpointing", is_flag=True,
              help="Pass checkpointing=True to the model's factory (models whose own code checkpoints).")
@click.option("--world-size", type=int, metavar="N",
              help="Ranks of a data-parallel job (with --parallel): the answer is per rank, --batch per rank.")
@click.option("--parallel", "strategy", type=click.Choice(["ddp", "fsdp"]),
              help="DistributedDataParallel, or FSDP2 (fully_shard on each repeated block and the root).")
@click.option("--reshard-after-forward/--no-reshard-after-forward", "reshard", default=None,
              help="FSDP2: free each block's gathered parameters after its forward (default) or keep them to the backward.")
@click.option("--find-unused-parameters", "unused", is_flag=True,
              help="DDP: parameters the loss does not reach are found each step and skipped (find_unused_parameters=True).")
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
def fit_cmd(model, input_specs, batch, gpu_name, gpu_mem, optimizer, amp, accumulation, checkpointing, sdpa_backend,
            model_checkpointing, world_size, strategy, reshard, unused, find_max_batch, args, headroom, engine, as_json,
            html_out, torch_version):
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
    from sa_profiler.cli import checks

    checks.batch(batch)
    checks.accumulation(accumulation)
    checks.checkpointing(checkpointing)
    checks.headroom(headroom)
    checks.card(gpu_name, gpu_mem, cpu_allowed=True)
    checks.optimizer(optimizer)
    checks.torch_version(torch_version, engine)
    setting = checks.parallel(world_size, strategy, reshard, unused)
    _check_page_path(html_out)

    from sa_profiler.models.fit import FitError, fit, load, parse_inputs
    from sa_profiler.models.library_models import LibraryError

    kwargs = factory_args(args)
    if model_checkpointing:
        kwargs["checkpointing"] = True
    if gpu_name and gpu_name.strip().lower() == "cpu":
        target, _ = _cpu_target(gpu_mem, headroom, engine)
        target = target[0]
    else:
        if engine == "measure":
            _fail("--engine measure runs the step on this CPU: add --gpu cpu "
                  "(CUDA steps are measured on the card by benchmarks/validate_fit_cuda.py)")
        target, _ = _target(gpu_name, gpu_mem, headroom) if (gpu_name or gpu_mem) else _target("t4", None, headroom)
    question = _question(target, engine, torch_version, amp=amp, optimizer=optimizer,
                         **({"parallel": setting} if setting else {}))
    try:
        factory = load(model, kwargs)
        input_specs = input_specs or getattr(factory, "default_inputs", None)
        if not input_specs:
            _fail(f"{model} needs its inputs: give --input [NAME=]SHAPE[:DTYPE] for each (e.g. --input 3x224x224)")
        specs = parse_inputs(list(input_specs))
        result = fit(factory, specs, batch, question, find_max_batch=find_max_batch, name=model,
                     compare_fp32=bool(html_out and amp), accumulation=accumulation, checkpointing=checkpointing,
                     sdpa_backend=sdpa_backend)
    except (FitError, LibraryError) as err:  # LibraryError: a default input its library cannot size
        _fail(str(err))
    if html_out:
        from sa_profiler.report.fit_html import write_html

        _write_page(html_out, lambda command: write_html(result, html_out, command))
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    from rich.console import Console

    from sa_profiler.report.console import render_fit

    render_fit(result, Console())


def factory_args(args) -> dict:
    """`--arg KEY=VALUE` (repeatable) as keyword arguments; one line for one without a `=`."""
    kwargs = {}
    for item in args:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"cannot read --arg {item!r}: expected KEY=VALUE")
        kwargs[key] = _literal(value)
    return kwargs


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
