"""A card key in a row (a Workload's `target`, a CSV's column) -> the card it names."""

from __future__ import annotations

import torch

from sa_profiler.targets import gpus

CPU = "cpu"
LOCAL = "cuda"


def resolve(target: str) -> gpus.GPU | None:
    """None for the CPU; a catalogue GPU, a custom-size GPU, or the local CUDA card."""
    if target == CPU:
        return None
    if target == LOCAL or target.startswith(LOCAL + ":"):  # "cuda:T4": the card a Ray task landed on
        if not torch.cuda.is_available():
            raise ValueError(f"target {target!r} needs a local CUDA GPU, and torch sees none")
        return gpus.local()
    if target.startswith("custom-"):
        return gpus.custom(int(target.split("-", 1)[1]))
    if "@" in target:  # a catalogue card with another memory size: "h100@12884901888"
        name, size = target.split("@", 1)
        return gpus.resized(gpus.lookup(name), int(size))
    return gpus.lookup(target)
