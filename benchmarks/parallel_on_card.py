"""One rank of a parallel job on one card, against `fit --parallel`'s simulated rank.

    python benchmarks/parallel_on_card.py --out reports/validation           # on a CUDA card
    python benchmarks/parallel_on_card.py --device cpu --small --out /tmp/x  # a dry run on the CPU

Real DDP and FSDP2 (`fully_shard` on each repeated block and the root, with and without
resharding) under torch's fake process group as rank 0 of 2, 8 and 64: the collectives move no
data, every allocation is real. On a card, the peak of `max_memory_allocated` from before the
wrapper is built to the end of two training steps (Adam), beside the simulated per-rank peak for
this card; on the CPU, PyTorch's MemTracker around the same steps. Each case runs in a process of
its own (no library workspace left from another). Writes parallel-<gpu>-<torch>.csv. What no
single card shows: NCCL's own buffers (the fake group has none) and the collectives' time.
Goal: within 5 % on the card; equal on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

CASES = [  # model, its arguments, inputs, batch per rank
    ("examples/zoo/vit.py:vit_small", {}, "3x224x224", 32),
    ("examples/sagan.py:Generator", {"ch": 32, "image_size": 64}, "128", 16),
    ("transformers:gpt2", {"n_layer": 6, "n_embd": 512, "n_head": 8, "vocab_size": 8000, "n_positions": 256},
     "input_ids=256:int64:range=0..8000", 8),
]
SMALL = [  # the same models at test size, for the CPU
    ("examples/zoo/vit.py:vit_tiny_test", {}, "3x32x32", 16),
    ("examples/sagan.py:Generator", {"ch": 8, "image_size": 32}, "128", 4),
    ("transformers:gpt2", {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 1000, "n_positions": 64},
     "input_ids=32:int64:range=0..1000", 4),
]
HOW = [("ddp", True), ("fsdp", True), ("fsdp", False)]


class _Label:
    label = ""  # what parallel.ddp labels its buckets on; nothing reads it here


def measured(spec, args, inputs, batch, strategy, reshard, world, device) -> int:
    """Two real steps of rank 0 under the fake group on `device`: the peak."""
    import torch
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from sa_profiler.models import inputs as model_inputs, parallel
    from sa_profiler.models.loading import load
    from sa_profiler.models.step import _first_tensor

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world)
    torch.manual_seed(0)
    model = load(spec, args)().train()
    specs = model_inputs.parse_all(inputs.split(";"))
    x, kw = model_inputs.make(specs, batch, device)
    if strategy == "fsdp":
        parallel.fsdp(model, world, reshard_after_forward=reshard, device=device)  # shards moved to the mesh's device
    else:
        model.to(device)
    tracker = None
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        from torch.distributed._tools.mem_tracker import MemTracker

        tracker = MemTracker()
        tracker.track_external(model, *x, *kw.values())
        tracker.__enter__()
    trained = parallel.ddp(model, world, _Label(), on_meta=False, find_unused_parameters=False) if strategy == "ddp" else model
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                           foreach=True if device == "cuda" else None)
    for i in range(2):
        if tracker is not None and i:
            tracker.reset_mod_stats()
        opt.zero_grad(set_to_none=True)
        loss = _first_tensor(trained(*x, **kw)).float().mean()
        loss.backward()
        del loss
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    tracker.__exit__(None, None, None)
    return sum(d["Total"] for d in tracker.get_tracker_snapshot("peak").values())


def simulated(spec, args, inputs, batch, strategy, reshard, world, device) -> int:
    from sa_profiler.models.loading import load
    from sa_profiler.models.step import run_step
    from sa_profiler.question import Parallel, make_question
    from sa_profiler.targets import gpus

    card = gpus.local() if device == "cuda" else gpus.host()
    q = make_question(card, parallel=Parallel(world, strategy, reshard))
    step = run_step(load(spec, args), inputs.split(";"), batch, q)
    if not step.ok:
        raise RuntimeError(step.message)
    return step.peak_total


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--world", default="2,8,64", help="world sizes, comma-separated")
    ap.add_argument("--small", action="store_true", help="the models at test size")
    ap.add_argument("--out", default="reports/validation")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:  # one case, in this process: print its peak
        case = json.loads(a.child)
        print(json.dumps(measured(**case)))
        return
    import torch

    from sa_profiler.sweeps import files
    from sa_profiler.targets import gpus

    card = gpus.local().key if a.device == "cuda" else "cpu"
    rows = []
    for spec, args, inputs, batch in SMALL if a.small else CASES:
        for strategy, reshard in HOW:
            for world in (int(w) for w in a.world.split(",")):
                case = dict(spec=spec, args=args, inputs=inputs, batch=batch, strategy=strategy, reshard=reshard,
                            world=world, device=a.device)
                done = subprocess.run([sys.executable, __file__, "--child", json.dumps(case)], capture_output=True,
                                      text=True, timeout=600)
                if done.returncode:
                    print(f"{spec} {strategy} world {world}: failed: "
                          f"{(done.stderr.strip().splitlines() or ['no output'])[-1][:200]}", flush=True)
                    continue
                meas = json.loads(done.stdout.strip().splitlines()[-1])
                sim = simulated(**case)
                rows.append({"model": spec, "args": json.dumps(args), "input": inputs, "batch_per_rank": batch,
                             "strategy": strategy, "reshard_after_forward": reshard, "world_size": world,
                             "measured_peak": meas, "simulated_peak": sim, "rel_error": (sim - meas) / meas,
                             "device": card, "torch": torch.__version__, "cuda": torch.version.cuda or ""})
                print(f"{spec} {strategy}{'' if reshard else ' (kept)'} world {world}: measured {meas:,}, "
                      f"simulated {sim:,}, {rows[-1]['rel_error']:+.2%}", flush=True)
    os.makedirs(a.out, exist_ok=True)
    if rows:
        path = files.write_csv(os.path.join(a.out, f"parallel-{card}-{torch.__version__.split('+')[0]}.csv"),
                               rows, list(rows[0]))
        print("wrote", path)
    worst = max((abs(r["rel_error"]) for r in rows), default=0.0)
    print(f"worst error: {worst:.2%} over {len(rows)} cases")


if __name__ == "__main__":
    main()
