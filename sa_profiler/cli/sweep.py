"""`sa-profile sweep`: a grid of workloads to CSV, JSON and an HTML report."""

from __future__ import annotations

import sys

import click

from sa_profiler.cli.common import (
    _cpu_target, _engine, _fail, _ray_executor, _ray_targets, _target,
    _torch_version_option,
)
from sa_profiler.cli.headline import cli


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
    from sa_profiler.sweeps.grid import parse_ints, parse_resolutions
    from sa_profiler.units import ParseError

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
    chosen_dtypes, chosen_impls, ray_executor, target_list, engine = _questions(
        dtypes, impls, headroom, gpu_name, gpu_mem, engine, executor, ray_address, torch_version)
    dtype_list = chosen_dtypes or ["float32"]
    # each implementation with the backend asked for; the registry's defaults are the sweep's to add
    impl_list = [(name, {"backend": backend} if backend else {}) for name, _, backend in
                 (spec.partition(":") for spec in chosen_impls or ["reference", "sdpa", "chunked"])]
    modes = ["forward", "train"] if mode == "both" else [mode]

    import shlex

    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from sa_profiler.sweeps import largest as batch_search
    from sa_profiler.sweeps import sweep as sweeping
    from sa_profiler.sweeps.executors import ExecutorError
    from sa_profiler.sweeps.lock import FolderBusy, folder_lock
    from sa_profiler.report.html import write_report

    try:  # the questions, whole: each card with its headroom, the engine, the torch whose rules apply
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
                    rows = sweeping.run(spec, out, resume=resume, on_row=on_row, executor=ray_executor,
                                        on_note=lambda note: console.print(f"note: {note}", markup=False,
                                                                           highlight=False))
                except (sweeping.SweepError, ExecutorError) as err:
                    _fail(str(err))
                except KeyboardInterrupt:
                    click.echo(f"sa-profile: interrupted; the rows done are in {out}/results.csv: finish with --resume",
                               err=True)
                    sys.exit(130)
                progress.update(task, description="largest batch of each configuration (the engine's search)")
                batch_search.write(batch_search.search(rows, spec.questions), out)  # under the grid's questions
            report = write_report(f"{out}/results.csv")
    except FolderBusy as err:
        if ray_executor is not None:
            ray_executor.close()
        _fail(str(err))
    _sweep_summary(rows, Console())
    click.echo(f"wrote {out}/results.csv, {out}/results.json, {out}/{batch_search.LARGEST} and {report}")


def _questions(dtypes, impls, headroom, gpu_name, gpu_mem, engine, executor, ray_address, torch_version):
    """Every option judged alone (before torch loads), then the cards with their headroom, the
    engine and the Ray executor where asked: (dtypes, implementations, executor, cards, engine)."""
    from sa_profiler.cli import checks

    chosen_dtypes = checks.dtypes(dtypes)  # every option judged alone, before torch loads
    chosen_impls = checks.impls(impls)
    checks.headroom(headroom)
    if not (gpu_name and gpu_name.strip().lower() == "all-workers"):
        checks.card(gpu_name, gpu_mem, cpu_allowed=True)
    checks.torch_version(torch_version, "measure" if engine == "measure" else "simulate")
    ray_executor = None
    if executor == "ray":
        ray_executor = _ray_executor(ray_address)
        target_list, engine = _ray_targets(ray_executor, gpu_name, gpu_mem, headroom, engine)
    elif gpu_name and gpu_name.strip().lower() == "all-workers":
        _fail("--gpu all-workers measures on every GPU kind of a Ray cluster: add --executor ray")
    elif gpu_name and gpu_name.strip().lower() == "cpu":
        target_list, engine = _cpu_target(gpu_mem, headroom, engine)
    else:
        target, local = _target(gpu_name, gpu_mem, headroom, emulate=engine == "measure")
        target_list, engine = [target], _engine(engine, local)
    from sa_profiler.engine.workload import DTYPES

    for target in target_list:
        for d in chosen_dtypes or ["float32"]:
            why = target.card.supports(DTYPES[d])
            if why:
                _fail(f"{d} cannot run on this target: {why}")
    return chosen_dtypes, chosen_impls, ray_executor, target_list, engine


def _sweep_summary(rows, console) -> None:
    import pandas as pd
    from rich.markup import escape
    from rich.table import Table

    from sa_profiler.units import format_bytes

    import json

    frame = pd.DataFrame(rows)
    frame["total"] = pd.to_numeric(frame.total_bytes, errors="coerce")
    frame["tokens"] = pd.to_numeric(frame.tokens)
    frame["options"] = [  # one group per implementation and backend / checkpointing, whatever the chunk
        " ".join(f"{k}={v}" for k, v in json.loads(o or "{}").items() if k in ("backend", "checkpoint", "pool"))
        for o in frame.options]
    from rich import box

    from sa_profiler.report.layout import print_table

    table = Table(title="Sweep summary", title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1),
                  collapse_padding=True, pad_edge=False, header_style="bold")
    for col in ("implementation", "dtype", "mode", "rows", "ok", "oom", "skipped", "largest N that fits", "peak there"):
        table.add_column(col, justify="left" if col in ("implementation", "dtype", "mode") else "right")
    short = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}  # as --dtype spells them
    for (impl, opts, dtype, mode), g in frame.groupby(["impl", "options", "dtype", "mode"], sort=False):
        ok = g[g.status == "ok"]
        top = ok.sort_values(["tokens", "total"]).iloc[-1] if len(ok) else None
        label = impl + (f" [{opts}]" if opts else "")
        counts = g.status.value_counts()
        table.add_row(escape(label), short.get(dtype, dtype), mode, str(len(g)), str(counts.get("ok", 0)),
                      str(counts.get("oom", 0)), str(counts.get("skipped", 0)),
                      str(int(top.tokens)) if top is not None else "-",
                      format_bytes(top.total) if top is not None and top.total == top.total else "-")
    print_table(console, table, wrap=())  # names and numbers whole; one record per row when too narrow
