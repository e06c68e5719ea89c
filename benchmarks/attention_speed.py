"""Forward and training-step time of each implementation on the local CUDA card, as ratios.

    python benchmarks/attention_speed.py --out reports/validation

For each shape and dtype: the classic forum code (a verbatim copy, tests/classic_sagan.py),
the reference layer, SDPA with each backend the card runs, and chunked attention, timed with
CUDA events (median of repeats after warm-up) in one run. Each time is printed as a ratio to
the fastest SDPA backend of the same shape, dtype and mode, and the classic layer as a ratio
to the verbatim forum code. Results go to attention-speed-<gpu>-<torch>.csv.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys

import torch

ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from classic_sagan import Self_Attn  # noqa: E402
from sa_profiler.targets import gpus  # noqa: E402
from sa_profiler.attention import BackendUnavailable, build  # noqa: E402

SHAPES = [(8, 64, 32, 32), (2, 128, 64, 64), (1, 128, 128, 128)]
VARIANTS = [("forum", {}), ("reference", {}), ("sdpa", {}), ("sdpa", {"backend": "efficient"}),
            ("sdpa", {"backend": "flash"}), ("sdpa", {"backend": "cudnn"}), ("sdpa", {"backend": "math"}),
            ("chunked", {"chunk": 1024}), ("chunked", {"chunk": 1024, "checkpoint": True})]


def timed(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/validation")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args(argv)
    gpu = gpus.local()
    path = os.path.join(args.out, f"attention-speed-{gpu.key}-{torch.__version__.split('+')[0]}.csv")
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for b, c, h, w in SHAPES:
        for dtype in (torch.float16, torch.float32):
            for mode in ("forward", "train"):
                for impl, opts in VARIANTS:
                    torch.manual_seed(0)
                    layer = (Self_Attn(c, None) if impl == "forum" else build(impl, c, **opts)).cuda().to(dtype)
                    x = torch.randn(b, c, h, w, device="cuda", dtype=dtype, requires_grad=mode == "train")

                    def step():
                        if mode == "forward":
                            with torch.no_grad():
                                layer(x)
                        else:
                            layer(x)[0].sum().backward()

                    label = impl + "".join(f"[{k}={v}]" for k, v in opts.items())
                    try:
                        t = timed(step, args.repeats)
                        status = "ok"
                    except (BackendUnavailable, torch.cuda.OutOfMemoryError) as err:
                        t, status = None, str(err).splitlines()[0][:120]
                    rows.append({"gpu": gpu.name, "torch": torch.__version__, "batch": b, "channels": c, "height": h,
                                 "width": w, "dtype": str(dtype)[6:], "mode": mode, "impl": label, "time_s": t,
                                 "status": status})
                    del layer, x
                    torch.cuda.empty_cache()
                group = rows[-len(VARIANTS):]
                sdpa = [r["time_s"] for r in group if r["impl"].startswith("sdpa") and r["time_s"]]
                forum = next(r["time_s"] for r in group if r["impl"] == "forum")
                best = min(sdpa) if sdpa else None
                for r in group:
                    r["ratio_to_best_sdpa"] = r["time_s"] / best if r["time_s"] and best else None
                    r["ratio_to_forum"] = r["time_s"] / forum if r["time_s"] and forum else None
                    t = f"{r['time_s'] * 1e3:9.3f} ms" if r["time_s"] else f"{'-':>12}"
                    ratio = f"x{r['ratio_to_best_sdpa']:.2f} vs best SDPA" if r["ratio_to_best_sdpa"] else r["status"][:60]
                    print(f"{b}x{c}x{h}x{w} {r['dtype']:8s} {mode:7s} {r['impl']:38s} {t}  {ratio}"
                          + (f"  (x{r['ratio_to_forum']:.2f} vs forum code)" if r["impl"] == "reference" and r["ratio_to_forum"] else ""),
                          flush=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("wrote", path)


if __name__ == "__main__":
    main()
