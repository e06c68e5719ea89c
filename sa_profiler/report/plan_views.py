"""`plan`'s answer in the console and as JSON, and the top plan as code to paste: every view reads
the same `models.plan.Plan`."""

from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Table

from sa_profiler.engine import timing
from sa_profiler.models import blocks
from sa_profiler.report.layout import nb, print_table, say
from sa_profiler.units import format_bytes, format_seconds

SHOWN = 12  # rows of the console's table; the JSON has them all
JSON_VERSION = 1


def _row(p, plan) -> dict:
    c = p.config
    return {"changes": c.changes(plan.base), "micro_batch": c.micro_batch, "accumulation": c.accumulation,
            "amp": c.amp, "attention": c.code_attention() or None, "checkpointing": c.checkpointing,
            "optimizer": c.optimizer, "strategy": c.strategy, "reshard_after_forward": c.reshard, "peak_bytes": p.peak, "left_bytes": plan.question.usable - p.peak,
            "time_s": p.time_s, "samples_per_second": p.samples_per_second(plan.batch),
            "trains_the_same": p.same_training, "training": p.why}


def plan_json(plan) -> dict:
    return {"version": JSON_VERSION, "model": plan.model, "batch": plan.batch, "question": plan.question.to_json(),
            "usable_bytes": plan.question.usable, "time_error_factor": timing.typical_factor(),
            "plans": [_row(p, plan) for p in plan.plans],
            "closest": None if plan.closest is None else {**_row(plan.closest, plan),
                                                          "over_bytes": plan.closest.peak - plan.question.usable},
            "code": code(plan) if plan.top else None, "unavailable": plan.unavailable,
            "simulated_steps": plan.simulated}


def render_plan(plan, console) -> None:
    q = plan.question
    say(console, f"[bold]{nb(escape(plan.model))}[/]: a global batch of {plan.batch} on "
                 f"[bold]{nb(escape(q.card.name))}[/], {format_bytes(q.usable)} usable "
                 f"({q.optimizer}{', AMP ' + q.amp if q.amp else ''}; {plan.simulated} steps simulated)")
    if not plan.plans:
        c = plan.closest
        say(console, "[bold red]Nothing tried fits.[/]" + (
            f" Closest: {escape('; '.join(c.config.changes(plan.base)))}, peak {format_bytes(c.peak)}, "
            f"{format_bytes(c.peak - q.usable)} over the usable memory." if c else ""))
    else:
        table = Table(title="Plans that fit, fastest first", title_justify="left", box=box.SIMPLE_HEAD,
                      header_style="bold")
        for col in ("#", "what changes", "peak", "left", "time / step", "samples/s", "training"):
            table.add_column(col, justify="left" if col in ("what changes", "training") else "right")
        for i, p in enumerate(plan.plans[:SHOWN], 1):
            sps = p.samples_per_second(plan.batch)
            table.add_row(str(i), escape("; ".join(p.config.changes(plan.base))), format_bytes(p.peak),
                          format_bytes(q.usable - p.peak), format_seconds(p.time_s) if p.time_s else "-",
                          f"{sps:,.1f}" if sps else "-",
                          "the same" if p.same_training else escape("changes: " + "; ".join(p.why)))
        print_table(console, table, wrap=("what changes", "training"))
        if len(plan.plans) > SHOWN:
            say(console, f"{len(plan.plans) - SHOWN} more in --json")
        say(console, f"Times are estimates (typical error x{timing.typical_factor():.2f}); within it, plans that "
                     "train the same thing rank first.")
        say(console, "[bold green]The top plan, as code:[/]")
        console.print(escape(code(plan)), markup=True, highlight=False, soft_wrap=True)
    for line in plan.unavailable:
        say(console, f"not tried: {escape(line)}")


def code(plan) -> str:
    """The top plan as the lines a user pastes into a training loop."""
    c = plan.top.config
    k = c.accumulation
    lines = ["import functools", "import torch"]
    if c.attention and c.attention[0] == "convert":
        lines += ["from sa_profiler import convert", c.code_attention()]
    elif c.attention and c.attention[0] == "backend":
        from sa_profiler.models.step import SDPA_BACKENDS

        lines += ["from torch.nn.attention import SDPBackend, sdpa_kernel",
                  f"forced = sdpa_kernel(SDPBackend.{SDPA_BACKENDS[c.attention[1]]})  # enter it around each "
                  "forward and backward: `with forced:`"]
    elif c.attention:
        lines += ["# route the model's explicit attention through F.scaled_dot_product_attention "
                  "(its library's switch, as `sa-profile fit` names it)"]
    if c.checkpointing:
        lines += _checkpoint_lines(plan, c.checkpointing)
    lines += _strategy_lines(plan, c)
    lines.append(_optimizer_line(c.optimizer))
    if c.amp == "fp16":
        lines.append('scaler = torch.amp.GradScaler("cuda")')
    # FSDP2 casts the parameters by its policy: no autocast around the forward
    dtype = None if c.strategy == "fsdp" else {"fp16": "torch.float16", "bf16": "torch.bfloat16"}.get(c.amp)
    world = plan.question.parallel.world_size
    share = f"{plan.batch} samples" if world == 1 else f"{plan.batch // world} samples a rank, {plan.batch} over {world}"
    lines.append(f"for batch in loader:  # {share}" + (f", {k} micro-batches of {c.micro_batch}" if k > 1 else ""))
    lines.append("    optimizer.zero_grad(set_to_none=True)")
    body = "    " if k == 1 else "        "
    if k > 1:
        lines.append(f"    for micro in batch.split({c.micro_batch}):")
    source = "micro" if k > 1 else "batch"
    if dtype:
        device = "cuda" if plan.question.gpu is not None else "cpu"
        lines.append(f'{body}with torch.autocast("{device}", dtype={dtype}):')
        lines.append(f"{body}    loss = loss_fn(model({source}))" + (f" / {k}" if k > 1 else ""))
    else:
        lines.append(f"{body}loss = loss_fn(model({source}))" + (f" / {k}" if k > 1 else ""))
    lines.append(f"{body}" + ("scaler.scale(loss).backward()" if c.amp == "fp16" else "loss.backward()"))
    lines += (["    scaler.step(optimizer)", "    scaler.update()"] if c.amp == "fp16" else ["    optimizer.step()"])
    return "\n".join(lines)


def _checkpoint_lines(plan, setting: str) -> list[str]:
    every = 1 if setting in ("all", "selective") else int(setting.split("-", 1)[1])
    out = ["from torch.utils.checkpoint import checkpoint"]
    extra = ""
    if setting == "selective":
        out += ["from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts",
                "SAVE = {" + ", ".join(f"torch.ops.aten.{op}.default" for op in blocks.SAVED_OPS) + "}",
                "def policy(ctx, op, *args, **kwargs):  # keep matrix products' and attention's outputs",
                "    keep = op in SAVE or op.__name__.startswith('aten._scaled_dot_product_')",
                "    return CheckpointPolicy.MUST_SAVE if keep else CheckpointPolicy.PREFER_RECOMPUTE"]
        extra = ", context_fn=functools.partial(create_selective_checkpoint_contexts, policy)"
    names = plan.block_names if every == 1 else plan.block_names[::every]
    out += [f"for name in {names!r}:  # the repeated blocks" + (f", every {every}th" if every > 1 else ""),
            "    block = model.get_submodule(name)",
            f"    block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False{extra})"]
    return out


def _strategy_lines(plan, c) -> list[str]:
    """The wrapper of one rank (a process per GPU, started by torchrun, with the process group
    initialised), before the optimizer is built on its parameters."""
    if c.strategy == "ddp":
        return ["# one process per GPU (torchrun), torch.distributed.init_process_group() called",
                "model = torch.nn.parallel.DistributedDataParallel(model)"]
    if c.strategy != "fsdp":
        return []
    dtype = {"fp16": "torch.float16", "bf16": "torch.bfloat16"}.get(c.amp)
    policy = f", mp_policy=MixedPrecisionPolicy(param_dtype={dtype}, reduce_dtype=torch.float32)" if dtype else ""
    out = ["# one process per GPU (torchrun), torch.distributed.init_process_group() called",
           "from torch.distributed.fsdp import " + ("MixedPrecisionPolicy, fully_shard" if dtype else "fully_shard")]
    parents = {name.rpartition(".")[0] for name in plan.block_names}
    parent = next(iter(parents)) if len(parents) == 1 else ""
    if parent and [n.rpartition(".")[2] for n in plan.block_names] == [str(i) for i in range(len(plan.block_names))]:
        # the blocks are one container's 0 .. n-1: a range, not n names
        out += [f"for i in range({len(plan.block_names)}):  # the repeated blocks, then the root",
                f'    fully_shard(model.get_submodule(f"{parent}.{{i}}"), reshard_after_forward={c.reshard}{policy})']
    elif plan.block_names:
        out += [f"for name in {plan.block_names!r}:  # the repeated blocks, then the root",
                f"    fully_shard(model.get_submodule(name), reshard_after_forward={c.reshard}{policy})"]
    out.append(f"fully_shard(model, reshard_after_forward={c.reshard}{policy})")
    return out


def _optimizer_line(name: str) -> str:
    return {"sgd": "optimizer = torch.optim.SGD(model.parameters(), lr=0.01)",
            "sgd-momentum": "optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)",
            "adam": "optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)",
            "adamw": "optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)",
            "adam-fused": "optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)",
            "adamw-fused": "optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)",
            "adafactor": "from transformers.optimization import Adafactor\noptimizer = Adafactor(model.parameters(), "
                         "lr=1e-3, scale_parameter=False, relative_step=False, warmup_init=False)",
            "adamw8bit": "import bitsandbytes as bnb\noptimizer = bnb.optim.AdamW8bit(model.parameters(), lr=1e-4)"}.get(
        name, f"optimizer = ...  # {name}")


def _per_second(value: float | None) -> str:
    return f"{value:,.1f}" if value else "-"


def plan_html(plan, out, command: str = ""):
    """The plan as a self-contained page: the same rows, words and code as the console and JSON."""
    from sa_profiler.report import page
    from sa_profiler.report.page import esc

    doc, q = plan_json(plan), plan.question
    rows = "".join(
        f"<tr><td>{i}</td><td class='s'>{esc('; '.join(r['changes']))}</td><td>{esc(format_bytes(r['peak_bytes']))}</td>"
        f"<td>{esc(format_bytes(r['left_bytes']))}</td>"
        f"<td>{esc(format_seconds(r['time_s']) if r['time_s'] else '-')}</td>"
        f"<td>{esc(_per_second(r['samples_per_second']))}</td>"
        f"<td class='s'>{'the same' if r['trains_the_same'] else esc('changes: ' + '; '.join(r['training']))}</td></tr>"
        for i, r in enumerate(doc["plans"], 1))
    closest = doc["closest"]
    body = (f"<h1>{esc(plan.model)}: a global batch of {plan.batch} on {esc(q.card.name)}</h1>"
            f"<p class='sub'>{esc(format_bytes(q.usable))} usable; {esc(q.optimizer)}"
            f"{esc(', AMP ' + q.amp) if q.amp else ''}; {plan.simulated} steps simulated; times are estimates "
            f"(typical error x{timing.typical_factor():.2f}). Memory sizes are binary (1 GiB = 2^30 bytes)."
            + (f" Command: <code>{esc(command)}</code>" if command else "") + "</p>")
    if doc["plans"]:
        body += ("<table><thead><tr><th>#</th><th>what changes</th><th>peak</th><th>left</th><th>time / step</th>"
                 f"<th>samples/s</th><th>training</th></tr></thead><tbody>{rows}</tbody></table>"
                 f"<h2>The top plan, as code</h2><pre class='code'>{esc(doc['code'])}</pre>")
    else:
        body += ("<p><b>Nothing tried fits.</b>" + (
            f" Closest: {esc('; '.join(closest['changes']))}, peak {esc(format_bytes(closest['peak_bytes']))}, "
            f"{esc(format_bytes(closest['over_bytes']))} over the usable memory." if closest else "") + "</p>")
    body += "".join(f"<p class='muted'>not tried: {esc(line)}</p>" for line in plan.unavailable)
    return page.write(out, page.document(f"plan: {plan.model}", body, []))
