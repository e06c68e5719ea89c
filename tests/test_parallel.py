"""One rank of a data-parallel job (models/parallel.py): torch's DDP and FSDP2 under the fake
process group, simulated, against real gloo processes measured by PyTorch's MemTracker, to the
byte; what must agree with the single-device answer; the views; the refusals."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from sa_profiler import names
from sa_profiler.cli import cli
from sa_profiler.models.fit import FitError, fit, load, run_step
from sa_profiler.question import Parallel, Question, make_question
from sa_profiler.targets import gpus
from zoo_cases import GPT2, PADDED

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")]

FSDP_HERE = names.strategy_unsupported("fsdp", torch.__version__) is None
needs_fsdp = pytest.mark.skipif(not FSDP_HERE, reason="fully_shard is public from torch 2.6")

# (id, spec, factory arguments, inputs, batch): a zoo model, a SAGAN GAN's generator, a transformers model
MODELS = [
    ("vit", "examples/zoo/vit.py:vit_tiny_test", {}, ["3x32x32"], 16),
    ("sagan-generator", "examples/sagan.py:Generator", {"ch": 8, "image_size": 32}, ["128"], 4),
    pytest.param("gpt2", "transformers:gpt2", GPT2, list(PADDED), 4, marks=pytest.mark.slow, id="gpt2"),
]
HOW = [("ddp", True), pytest.param("fsdp", True, marks=needs_fsdp, id="fsdp"),
       pytest.param("fsdp", False, marks=needs_fsdp, id="fsdp-no-reshard")]


def _question(world: int, strategy: str, reshard: bool = True, card=None, **more) -> Question:
    return make_question(card or gpus.host(), parallel=Parallel(world, strategy, reshard), **more)


# -- 1. ground truth: real gloo processes under MemTracker ----------------------------------------
@pytest.mark.parametrize("strategy,reshard", HOW, ids=["ddp", "fsdp", "fsdp-no-reshard"])
@pytest.mark.parametrize("case_id,spec,args,inputs,batch", MODELS, ids=[m[0] if isinstance(m, tuple) else m.id
                                                                         for m in MODELS])
def test_simulated_rank_equals_gloo_ranks_under_memtracker(case_id, spec, args, inputs, batch, strategy, reshard):
    """World size 2: the simulated per-rank peak (meta tensors, the fake group) equals rank 0's
    MemTracker peak in real processes, to the byte (`_agrees`); rank 0 holds the largest shards
    (torch.chunk gives the remainder to the first ranks), so no rank peaks higher."""
    pytest.importorskip("torch.distributed._tools.mem_tracker")
    if spec.startswith("transformers:"):
        pytest.importorskip("transformers")
    from parallel_truth import measure

    sim = run_step(load(spec, dict(args)), inputs, batch, _question(2, strategy, reshard))
    assert sim.ok
    _agrees(sim.peak_total, lambda: measure(spec, inputs, batch, strategy, 2, reshard=reshard, args=dict(args)))


def _agrees(simulated: int, run) -> None:
    """Rank 0's peak in real processes is the simulated one, to the byte, in the run where gloo's
    worker released each collective's buffers in order (`parallel_truth.settled`: up to five
    runs; no run lower); and by each rank's smallest peak, rank 0 peaks highest."""
    from parallel_truth import settled

    runs = settled(run, simulated)
    assert runs[-1][0] == simulated and all(r[0] >= simulated for r in runs), (simulated, runs)
    lowest = [min(r[k] for r in runs) for k in range(len(runs[0]))]
    assert lowest[0] == max(lowest), runs


@needs_fsdp
@pytest.mark.parametrize("reshard", [True, False], ids=["reshard", "no-reshard"])
@pytest.mark.parametrize("case_id,spec,args,inputs,batch", MODELS[:2], ids=[m[0] for m in MODELS[:2]])
def test_fsdp2_rank_equals_fsdpmemtracker(case_id, spec, args, inputs, batch, reshard):
    """The same FSDP2 steps measured by torch's FSDP-aware tracker (FSDPMemTracker, which hooks
    the FSDP states and collectives itself): rank 0's peak is the simulated one, to the byte."""
    pytest.importorskip("torch.distributed._tools.fsdp2_mem_tracker")
    from parallel_truth import measure

    sim = run_step(load(spec, dict(args)), inputs, batch, _question(2, "fsdp", reshard))
    _agrees(sim.peak_total, lambda: measure(spec, inputs, batch, "fsdp", 2, reshard=reshard, args=dict(args),
                                            fsdp_tracker=True))


@needs_fsdp
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_world_size_four_against_gloo(strategy):
    pytest.importorskip("torch.distributed._tools.mem_tracker")
    from parallel_truth import measure

    spec, args, inputs, batch = MODELS[0][1:]
    sim = run_step(load(spec, args), inputs, batch, _question(4, strategy))
    _agrees(sim.peak_total, lambda: measure(spec, inputs, batch, strategy, 4))


# -- 2. agreement with the single-device answer ----------------------------------------------------
class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        return torch.relu(self.fc(x))


class Stack(nn.Module):
    """Four blocks of 250 features: 250 rows shard unevenly over 4, 8 and 64 ranks."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(Block(250) for _ in range(4))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def test_ddp_at_world_size_one_is_fit_plus_its_buckets():
    single = run_step(Stack, ["250"], 8, _question(1, "single"))
    ddp = run_step(Stack, ["250"], 8, _question(1, "ddp"))
    buckets = ddp.breakdown.pop("DDP buckets")
    # one flat bucket per gradient byte (DDP's buckets, 25 MiB each, hold every gradient)
    assert buckets == sum(p.numel() * 4 for p in Stack().parameters())
    assert ddp.breakdown == single.breakdown
    assert ddp.peak_total == single.peak_total + buckets


@needs_fsdp
@pytest.mark.parametrize("world", [2, 4, 8, 64])
def test_fsdp_shards_shrink_as_one_over_n(world):
    """Each parameter's dim 0 is padded to a multiple of the world size and split: rank 0 holds
    ceil(rows / N) rows of every parameter; Adam's two moments are shards of the same size."""
    step = run_step(Stack, ["250"], 8, _question(world, "fsdp"))
    shard = sum(math.ceil(p.shape[0] / world) * (p.numel() // p.shape[0]) * 4 for p in Stack().parameters())
    assert step.breakdown["parameters"] == shard
    adam_steps = 4 * len(list(Stack().parameters()))  # a float32 step count per parameter, on the host
    assert step.breakdown["optimizer state"] == 2 * shard + adam_steps
    if world == 2:
        single = run_step(Stack, ["250"], 8, _question(1, "single"))
        assert 2 * shard == single.breakdown["parameters"]


@needs_fsdp
def test_world_size_sixty_four_costs_what_two_does():
    """One rank simulated: the same steps whatever the world size (ops counted, not timed)."""
    two = run_step(Stack, ["250"], 8, _question(2, "fsdp"), timeline=True)
    many = run_step(Stack, ["250"], 8, _question(64, "fsdp"), timeline=True)
    assert [t[0] for t in two.timeline] == [t[0] for t in many.timeline]


@needs_fsdp
def test_a_cuda_target_answers_per_rank_with_the_cards_allocator():
    t4 = gpus.lookup("t4")
    ddp = run_step(Stack, ["250"], 8, _question(4, "ddp", card=t4))
    fsdp = run_step(Stack, ["250"], 8, _question(4, "fsdp", card=t4))
    assert ddp.ok and fsdp.ok and ddp.time_s and fsdp.time_s
    assert all(b % 512 == 0 for b in fsdp.breakdown.values())  # the caching allocator's blocks
    assert fsdp.breakdown["parameters"] < ddp.breakdown["parameters"]
    assert fsdp.breakdown["unsharded parameters"] > 0 and ddp.breakdown["DDP buckets"] > 0


@needs_fsdp
def test_amp_is_fsdp2s_mixed_precision_policy():
    """--amp bf16 with FSDP2: the parameters are gathered in bfloat16 (half the bytes), the
    shards and Adam's state stay float32, and no autocast runs around the forward."""
    a100 = gpus.lookup("a100")
    fp32 = run_step(Stack, ["250"], 8, _question(4, "fsdp", reshard=False, card=a100))
    bf16 = run_step(Stack, ["250"], 8, _question(4, "fsdp", reshard=False, card=a100, amp="bf16"))
    assert bf16.breakdown["parameters"] == fp32.breakdown["parameters"]
    assert bf16.breakdown["optimizer state"] == fp32.breakdown["optimizer state"]
    assert 0 < bf16.breakdown["unsharded parameters"] < fp32.breakdown["unsharded parameters"]


@needs_fsdp
def test_resharding_after_forward_frees_the_gathered_blocks():
    keep = run_step(Stack, ["250"], 8, _question(4, "fsdp", reshard=False))
    free = run_step(Stack, ["250"], 8, _question(4, "fsdp", reshard=True))
    assert keep.breakdown["unsharded parameters"] > free.breakdown["unsharded parameters"]


# -- 3. the answer and its views ------------------------------------------------------------------
@needs_fsdp
def test_fit_views_say_per_rank_and_the_global_batch():
    result = fit(Stack, ["250"], 8, "t4", world_size=4, parallel="fsdp", find_max_batch=True, conversions=())
    assert result.global_batch == 32 and result.max_batch >= 8
    data = result.to_json()
    assert data["parallel"] == {"world_size": 4, "strategy": "fsdp", "reshard_after_forward": True,
                                "find_unused_parameters": False}
    assert data["global_batch"] == 32 and data["question"]["parallel"]["world_size"] == 4
    assert "global batch 32 = 8 per rank x 4 ranks" in data["ranks"]
    assert any("NCCL_BUFFSIZE" in a for a in data["assumptions"])
    assert Question.from_json(data["question"]).parallel == Parallel(4, "fsdp", True)
    out = CliRunner().invoke(cli, ["fit", "tests/test_parallel.py:Stack", "--input", "250", "--batch", "8",
                                   "--gpu", "t4", "--world-size", "4", "--parallel", "fsdp", "--find-max-batch"],
                             env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "global batch 32 = 8 per rank x 4 ranks" in out.output
    assert f"Largest batch that fits per rank: {result.max_batch}" in out.output
    assert "unsharded parameters" in out.output and "NCCL_BUFFSIZE" in out.output
    from sa_profiler.report.fit_html import render

    page = render(result)
    assert "global batch 32 = 8 per rank x 4 ranks" in page and "NCCL_BUFFSIZE" in page


def test_one_device_answers_carry_no_rank_line():
    result = fit(Stack, ["250"], 8, "t4", conversions=())
    assert result.ranks == "" and result.assumptions == [] and result.global_batch == 8
    assert result.to_json()["parallel"] == {"world_size": 1, "strategy": "single", "reshard_after_forward": True,
                                            "find_unused_parameters": False}


# -- 4. refusals: one line, exit 2 -----------------------------------------------------------------
@pytest.mark.parametrize("extra,message", [
    (["--world-size", "0", "--parallel", "ddp"], "--world-size must be a positive integer (the number of ranks), got 0"),
    (["--parallel", "ddp"], "--parallel ddp needs --world-size N (the number of ranks)"),
    (["--world-size", "4"], "--world-size 4 needs --parallel ddp or --parallel fsdp"),
    (["--world-size", "2", "--parallel", "ddp", "--no-reshard-after-forward"],
     "--reshard-after-forward is FSDP2's: give it with --parallel fsdp"),
    (["--world-size", "2", "--parallel", "fsdp", "--find-unused-parameters"],
     "--find-unused-parameters is DDP's: give it with --parallel ddp --world-size N"),
    (["--find-unused-parameters"], "--find-unused-parameters is DDP's"),
    (["--world-size", "2", "--parallel", "fsdp", "--optimizer", "adafactor"], "--parallel fsdp steps torch's own"),
])
def test_bad_parallel_options_are_one_line(extra, message):
    if "adafactor" in extra:
        pytest.importorskip("transformers")
        if not FSDP_HERE:
            pytest.skip("fully_shard is public from torch 2.6")
    out = CliRunner().invoke(cli, ["fit", "tests/test_parallel.py:Stack", "--input", "250", *extra])
    assert out.exit_code == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sa-profile: error: {message}"), lines


def test_a_strategy_the_installed_torch_lacks_is_refused_before_torch(monkeypatch):
    from sa_profiler.torch_compat import versions

    monkeypatch.setattr(versions, "installed_version", lambda: "2.5.1")
    out = CliRunner().invoke(cli, ["fit", "tests/test_parallel.py:Stack", "--input", "250", "--world-size", "2",
                                   "--parallel", "fsdp"])
    assert out.exit_code == 2
    assert out.stderr.strip() == ("sa-profile: error: --parallel fsdp needs torch 2.6 or later "
                                  "(torch.distributed.fsdp.fully_shard); this is 2.5.1")
    assert names.strategy_unsupported("fsdp", "2.6.0") is None and names.strategy_unsupported("ddp", "2.4.1") is None


@pytest.mark.parametrize("kwargs,message", [
    (dict(world_size=0, parallel="ddp"), "world size must be a positive integer, got 0"),
    (dict(parallel="ddp"), "--parallel ddp needs --world-size N"),
    (dict(world_size=2), "--world-size 2 needs --parallel ddp or --parallel fsdp"),
    (dict(world_size=2, parallel="zero"), "unknown parallel strategy 'zero'"),
    (dict(world_size=2, parallel="ddp", reshard_after_forward=False), "--reshard-after-forward is FSDP2's"),
    (dict(world_size=2, parallel="fsdp", find_unused_parameters=True), "--find-unused-parameters is DDP's"),
])
def test_the_python_api_refuses_the_same(kwargs, message):
    with pytest.raises(FitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fit(Stack, ["250"], 8, "t4", conversions=(), **kwargs)


def test_a_process_group_already_there_is_one_line(monkeypatch):
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    with pytest.raises(FitError, match="a process group is initialised in this process already"):
        run_step(Stack, ["250"], 8, _question(2, "ddp"))


def test_ddp_refuses_parameters_the_loss_does_not_use_as_torch_does():
    """DDP's reducer: a parameter with no gradient in the first backward stops the second step,
    in the simulation as in a real job (a BERT's pooler with the hidden states as the loss)."""

    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(FitError) as err:
        run_step(Unused, ["8"], 2, _question(2, "ddp"))
    assert str(err.value) == ("DDP: some parameters get no gradient from the loss (the reducer waits for them); "
                              "a job passes find_unused_parameters=True: add --find-unused-parameters")
    # with it, DDP finds them each step: the simulated step is the real one under the fake group
    q = make_question(gpus.host(), parallel=Parallel(2, "ddp", find_unused_parameters=True))
    if not torch._C._dispatch_has_kernel_for_dispatch_key("c10d::allreduce_", "Meta"):  # torch 2.4
        with pytest.raises(FitError, match="has no meta kernel for that all-reduce: simulate it under a newer torch"):
            run_step(Unused, ["8"], 2, q)
        return
    sim, real = run_step(Unused, ["8"], 2, q), run_step(Unused, ["8"], 2, q, device="cpu")
    assert sim.ok and (sim.peak_total, sim.breakdown) == (real.peak_total, real.breakdown)


def test_a_transformers_bert_with_its_pooler_under_ddp_finding_unused_parameters():
    """BERT's pooler gets no gradient from a loss on the hidden states: DDP needs
    find_unused_parameters=True, and with it the simulated rank equals real gloo processes."""
    pytest.importorskip("transformers")
    pytest.importorskip("torch.distributed._tools.mem_tracker")
    from parallel_truth import measure
    from zoo_cases import BERT

    q = make_question(gpus.host(), parallel=Parallel(2, "ddp", find_unused_parameters=True))
    sim = run_step(load("transformers:bert", dict(BERT)), list(PADDED), 4, q)
    assert sim.ok
    _agrees(sim.peak_total, lambda: measure("transformers:bert", list(PADDED), 4, "ddp", 2, args=dict(BERT),
                                            find_unused_parameters=True))


# -- 5. plan: the strategy as a kind of change ----------------------------------------------------
@needs_fsdp
def test_plan_over_ranks_tries_ddp_and_fsdp2_each_as_fit_runs_it():
    from dataclasses import replace

    from sa_profiler.models.plan import plan
    from sa_profiler.models.inputs import parse_all
    from sa_profiler.report.plan_views import code, plan_json

    t4 = make_question(gpus.lookup("t4"), parallel=Parallel(4, "ddp"))
    p = plan(Stack, parse_all(["250"]), 32, t4, name="Stack", tries=("parallel", "accumulation"))
    strategies = {(r.config.strategy, r.config.reshard) for r in p.plans}
    assert strategies == {("ddp", True), ("fsdp", True), ("fsdp", False)}
    for r in p.plans:  # one answer: the row's peak is fit's for that configuration by hand
        q = replace(t4, parallel=Parallel(4, r.config.strategy, r.config.reshard))
        assert r.config.micro_batch * r.config.accumulation == 8  # 32 over 4 ranks
        by_hand = run_step(Stack, ["250"], r.config.micro_batch, q, accumulation=r.config.accumulation,
                           cap=q.usable)
        assert by_hand.peak_total == r.peak and r.same_training
    rows = plan_json(p)["plans"]
    assert {row["strategy"] for row in rows} == {"ddp", "fsdp"}
    top = code(p)
    assert "8 samples a rank, 32 over 4" in top
    assert ("fully_shard" in top) == (p.top.config.strategy == "fsdp")


def test_plan_refuses_a_batch_the_ranks_cannot_split():
    out = CliRunner().invoke(cli, ["plan", "tests/test_parallel.py:Stack", "--input", "250", "--batch", "10",
                                   "--world-size", "4"])
    assert out.exit_code == 2
    assert out.stderr.strip() == "sa-profile: error: --batch 10 does not split over 4 ranks: give a multiple of 4"
    from sa_profiler.models.inputs import parse_all
    from sa_profiler.models.plan import plan

    with pytest.raises(FitError, match="a global batch of 10 does not split over 4 ranks"):
        plan(Stack, parse_all(["250"]), 10, make_question("t4", parallel=Parallel(4, "ddp")))


# -- 6. the wrappers' own arguments and words -------------------------------------------------------
def _sequential():  # the gradients come ready in another order than the parameters: DDP rebuilds its buckets
    return nn.Sequential(*[nn.Sequential(nn.Linear(256, 256), nn.ReLU()) for _ in range(4)])


@pytest.mark.parametrize("card", [None, "t4"])
def test_ddp_rebuilds_its_buckets_on_meta_as_on_the_cpu(card):
    """The second forward rebuilds the buckets in the order the first backward made the gradients
    ready, and reads rank 0's bucket indices back to the host (reducer.cpp sync_bucket_indices);
    the rebuilt buckets are labelled, and the simulated step equals the real one under the fake
    group."""
    from sa_profiler.engine import tracker as engine_tracker

    made = []  # every allocation labelled as DDP's, with its phase: the rebuild's come in the forward
    hold = engine_tracker.MemoryTracker._hold

    def spy(self, handle, info):
        if info.note == "DDP buckets":
            made.append((info.phase, info.dtype, math.prod(info.shape)))
        return hold(self, handle, info)

    q = _question(2, "ddp", card=gpus.lookup(card) if card else None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine_tracker.MemoryTracker, "_hold", spy)
        sim = run_step(_sequential, ["256"], 8, q, timeline=True)
    # rank 0's parameters broadcast at construction, where torch has the meta kernel (not 2.4)
    broadcast = torch._C._dispatch_has_kernel_for_dispatch_key("c10d::broadcast_", "Meta")
    assert (("broadcast_", "baseline") in {(t[0], t[2]) for t in sim.timeline}) == broadcast
    grads = sum(p.numel() for p in _sequential().parameters())
    assert sim.ok and sim.breakdown["DDP buckets"] == grads * 4
    assert ("forward", "float32", grads) in made and ("baseline", "float32", grads) in made
    if card is None:
        real = run_step(_sequential, ["256"], 8, q, device="cpu")
        assert (sim.peak_total, sim.breakdown) == (real.peak_total, real.breakdown)


def test_ddp_passes_inputs_given_by_name():
    """A model's inputs by argument name reach it through DDP's forward (and its pre-forward)."""
    by_name = run_step(Stack, ["x=250"], 8, _question(2, "ddp"))
    assert by_name.ok and by_name.peak_total == run_step(Stack, ["250"], 8, _question(2, "ddp")).peak_total


def test_ddp_keeps_its_logging_data_on_meta():
    from sa_profiler.models import parallel

    class Label:
        label = ""

    with parallel.rank_zero(2):
        with torch.device("meta"):
            model = Stack()
        wrapped = parallel.ddp(model, 2, Label(), on_meta=True, find_unused_parameters=False)
        assert wrapped._get_ddp_logging_data()["world_size"] == 2
        wrapped.logger.set_runtime_stats_and_log()  # quiet on meta: no timings to take


@needs_fsdp
@pytest.mark.parametrize("device,mesh_type", [("meta", "cpu"), ("cpu", "cpu"), ("cuda", "cuda")])
def test_fsdp_shards_each_block_then_the_root_on_one_mesh(monkeypatch, device, mesh_type):
    import torch.distributed.device_mesh as device_mesh
    import torch.distributed.fsdp as fsdp_api

    from sa_profiler.models import parallel

    meshes, calls = [], []
    monkeypatch.setattr(device_mesh, "init_device_mesh", lambda kind, shape: meshes.append((kind, shape)) or "MESH")
    monkeypatch.setattr(fsdp_api, "fully_shard", lambda module, **kw: calls.append((module, kw)))
    model = Stack()
    names_ = parallel.fsdp(model, 8, reshard_after_forward=False, param_dtype=torch.bfloat16, device=device)
    assert meshes == [(mesh_type, (8,))] and names_ == [f"blocks.{i}" for i in range(4)]
    assert [m for m, _ in calls] == [*model.blocks, model]
    for _, kw in calls:
        assert kw["mesh"] == "MESH" and kw["reshard_after_forward"] is False
        assert kw["mp_policy"].param_dtype == torch.bfloat16 and kw["mp_policy"].reduce_dtype == torch.float32
    calls.clear()
    parallel.fsdp(Stack(), 8, reshard_after_forward=True, device=device)
    assert all(kw["mp_policy"].param_dtype is None and kw["mp_policy"].reduce_dtype is None for _, kw in calls)
    import importlib

    shard_module = importlib.import_module("torch.distributed.fsdp._fully_shard._fully_shard")
    from torch.distributed.fsdp._fully_shard._fsdp_init import _get_device_from_mesh

    assert shard_module._get_device_from_mesh is _get_device_from_mesh  # restored


def test_the_rank_line_and_the_assumptions_word_for_word():
    from sa_profiler.models import parallel

    assert parallel.describe(Parallel(4, "ddp"), 8) == (
        "DDP over 4 ranks; the figures are per rank (each holds a whole replica); global batch 32 = 8 per rank "
        "x 4 ranks")
    assert parallel.describe(Parallel(8, "fsdp", True), 2, accumulation=3) == (
        "FSDP2 over 8 ranks, each block's parameters freed after its forward; the figures are per rank (rank 0, "
        "which holds the largest shards); global batch 48 = 2 per rank x 3 micro-steps x 8 ranks")
    assert parallel.describe(Parallel(2, "ddp"), 4, accumulation=2).endswith(
        "global batch 16 = 4 per rank x 2 micro-steps x 2 ranks")
    assert parallel.describe(Parallel(2, "ddp", find_unused_parameters=True), 1).startswith(
        "DDP over 2 ranks, finding the parameters the loss does not use; ")
    assert parallel.describe(Parallel(2, "fsdp", False), 1).startswith(
        "FSDP2 over 2 ranks, parameters kept gathered from forward to backward; ")
    cpu, cuda = parallel.assumptions(Parallel(2, "ddp"), cuda=False), parallel.assumptions(Parallel(2, "ddp"), cuda=True)
    assert cpu == ["Not counted: the communication library's own buffers (NCCL_BUFFSIZE, 4 MiB by default, for each "
                   "channel it opens to a peer; NCCL's environment-variable documentation); keep them in the "
                   "headroom.", "Times are each rank's compute alone: the collectives' time is not modelled."]
    assert cuda == ["Each rank is one process on its own card: its CUDA context is taken out of the usable memory, "
                    "as for one card.", *cpu]


def test_which_strategies_run_here(monkeypatch):
    import torch.distributed as dist

    from sa_profiler.models import parallel

    assert parallel.unsupported("single") is None and parallel.unsupported("ddp", "2.4.1") is None
    assert parallel.unsupported("fsdp", "2.5.1") == ("--parallel fsdp needs torch 2.6 or later "
                                                     "(torch.distributed.fsdp.fully_shard); this is 2.5.1")
    assert parallel.unsupported("fsdp", "2.6.0") is None
    monkeypatch.setattr(dist, "is_available", lambda: False)
    assert parallel.unsupported("ddp", "2.14.1") == ("--parallel ddp needs torch.distributed, which this torch "
                                                     "build (2.14.1) lacks")


def test_settled_runs_until_rank_zero_is_the_expected_peak():
    from parallel_truth import settled

    runs = iter([[12, 10], [11, 10], [10, 9], [10, 9]])
    assert settled(lambda: next(runs), 10) == [[12, 10], [11, 10], [10, 9]]
    assert settled(lambda: [13, 9], 10, tries=2) == [[13, 9], [13, 9]]  # never settles: the caller's assert fails
