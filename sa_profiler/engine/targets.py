"""Target names in a Workload -> the device they describe."""

from __future__ import annotations

import torch

from .. import gpus

CPU = "cpu"
LOCAL = "cuda"


def resolve(target: str) -> gpus.GPU | None:
    """None for the CPU; a catalogue GPU, a custom-size GPU, or the local CUDA card."""
    if target == CPU:
        return None
    if target == LOCAL:
        if not torch.cuda.is_available():
            raise ValueError("target 'cuda' needs a local CUDA GPU, and torch sees none")
        return gpus.local()
    if target.startswith("custom-"):
        return gpus.custom(int(target.split("-", 1)[1]))
    return gpus.lookup(target)


def key_of(gpu: gpus.GPU | None) -> str:
    if gpu is None:
        return CPU
    if gpu.local:
        return LOCAL
    return gpu.key
