"""`sa-profile gpus` (the catalogue) and `sa-profile doctor` (this machine)."""

from __future__ import annotations

import json

import click

from sa_profiler import __version__
from sa_profiler.cli.headline import cli


@cli.command("gpus")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def gpus_cmd(as_json):
    """The GPU catalogue: memory as torch reports it, compute capability, SMs, shared memory per
    block, peak rates, and where each figure comes from."""
    from sa_profiler.targets import gpus

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

    from sa_profiler.report.console import render_gpus
    from sa_profiler.report.layout import whole

    console = Console()
    render_gpus(gpus.CATALOGUE.values(), console)
    table = Table(title="Where each figure comes from", title_justify="left", box=box.SIMPLE_HEAD, header_style="bold")
    for col in ("key", "SMs", "smem/block", "memory", "SMs from", "rates from", "offered by"):
        table.add_column(col, justify="right" if col in ("SMs", "smem/block") else "left")
    for g in gpus.CATALOGUE.values():
        src = g.provenance()
        table.add_row(escape(g.key), str(g.sms), f"{g.smem_per_block // 1024} KiB", escape(src["total_memory"]),
                      escape(src["sms"]), escape(src["rates"]), escape(g.offered_by or "-"))
    console.print(whole(table))
    console.print(f"[dim]CC: {escape(gpus.CC_SOURCE)}. smem/block: the shared memory a block may opt into "
                  f"(sharedMemPerBlockOptin), {escape(gpus.SMEM_SOURCE)}; it decides which memory-efficient "
                  "backward kernel runs.[/]")


@cli.command("doctor")
def doctor_cmd():
    """What this machine has: torch, CUDA, the local card, SDPA backends, and what --engine auto does."""
    import platform

    import torch

    from sa_profiler.attention.routing import enabled_backends
    from sa_profiler.torch_compat import SUPPORTED, unsupported

    lines = [("sa-profiler", __version__), ("python", platform.python_version()),
             ("torch", f"{torch.__version__} ({unsupported(torch.__version__) or f'in the supported range {SUPPORTED[0]} to {SUPPORTED[1]}'})"),
             ("CUDA build", torch.version.cuda or "none (CPU build)"), ("CUDA available", str(torch.cuda.is_available())),
             ("SDPA backends enabled", ", ".join(enabled_backends()) + " (torch.backends.cuda flags; simulations honour them)")]
    if torch.cuda.is_available():
        from sa_profiler.targets import gpus

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
