"""The GPU catalogue: what a card has, as torch reports it, and what runs on it.

`total_memory` is `torch.cuda.get_device_properties(i).total_memory` in bytes (what torch
sees, below the marketing size). Peak rates are dense, from the vendors' datasheets and the
TechPowerUp GPU database (fp16 = tensor cores with fp32 accumulate where they exist).
`context_bytes` is the CUDA context and library handles that the card loses but
`max_memory_allocated` does not count: about 300 MiB with lazy module loading (CUDA >= 11.7,
pytorch#107667); 527 MiB measured on an H100 with torch 2.11 / CUDA 13 after init, and
~595 MiB after the first cuBLAS call. We use 512 MiB everywhere unless measured otherwise.
Memory sizes other than the T4's and the H100's are typical readings (+-50 MiB by driver/ECC).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace

import torch

from .attention.backends import DeviceCaps, cudnn_preferred

MiB = 2**20
GiB = 2**30
TFLOPS = 1e12
DEFAULT_CONTEXT = 512 * MiB


@dataclass(frozen=True)
class GPU:
    key: str
    name: str
    total_memory: int
    capability: tuple[int, int]
    sms: int
    fp32_flops: float
    fp16_flops: float
    bandwidth: float  # bytes/s
    aliases: tuple[str, ...] = ()
    context_bytes: int = DEFAULT_CONTEXT
    source: str = ""
    assumed: str = ""  # what was assumed, for targets built from a memory size alone
    local: bool = False

    @property
    def bf16(self) -> bool:
        return self.capability >= (8, 0)

    def caps(self, torch_version: str | None = None) -> DeviceCaps:
        pref = cudnn_preferred(self.capability, torch_version or torch.__version__, None)
        return DeviceCaps("cuda", self.capability, cudnn_preferred=pref)

    def supports(self, dtype: torch.dtype) -> str | None:
        """Why the card cannot compute in `dtype`, or None."""
        if self.key == HOST:
            return None
        if dtype == torch.bfloat16 and not self.bf16:
            return f"{self.name} (compute capability {self.capability[0]}.{self.capability[1]}) has no bfloat16 support"
        return None

    @property
    def cublas_workspace(self) -> int:
        """cuBLAS workspace held per handle/stream through the caching allocator (counted by
        `memory_allocated`): aten/src/ATen/cuda/CublasHandlePool.cpp `parseChosenWorkspaceSize`,
        4096 KiB * 2 + 16 KiB * 8 by default, 32 MiB on sm90."""
        return 32 * MiB if self.capability == (9, 0) else 4096 * 1024 * 2 + 16 * 1024 * 8

    @property
    def usable_memory(self) -> int:
        return self.total_memory - self.context_bytes


def _gpu(key, name, mib, cc, sms, fp32, fp16, bw_gbs, aliases=(), source="", **kw) -> GPU:
    return GPU(key, name, mib * MiB, cc, sms, fp32 * TFLOPS, fp16 * TFLOPS, bw_gbs * 1e9, tuple(aliases), source=source, **kw)


CATALOGUE: dict[str, GPU] = {g.key: g for g in [
    _gpu("t4", "Tesla T4", 15095, (7, 5), 40, 8.1, 65, 320, ("tesla t4", "colab", "colab-t4"),
         "nvidia.com/en-us/data-center/tesla-t4; total_memory 15095 MiB as torch reports it on Colab"),
    _gpu("p100", "Tesla P100 16GB", 16280, (6, 0), 56, 9.3, 18.7, 732, ("tesla p100", "p100-16gb"),
         "nvidia.com Tesla P100 datasheet (PCIe); fp16 is 2x fp32, no tensor cores"),
    _gpu("v100-16gb", "Tesla V100 16GB", 16160, (7, 0), 80, 15.7, 125, 900, ("v100", "tesla v100"),
         "nvidia.com/en-us/data-center/v100 (SXM2)"),
    _gpu("v100-32gb", "Tesla V100 32GB", 32510, (7, 0), 80, 15.7, 125, 900, ("tesla v100 32gb",),
         "nvidia.com/en-us/data-center/v100 (SXM2)"),
    _gpu("rtx-2080-ti", "GeForce RTX 2080 Ti", 11011, (7, 5), 68, 13.4, 53.8, 616, ("2080ti", "2080 ti", "rtx2080ti"),
         "techpowerup.com/gpu-specs (fp16 tensor, fp32 accumulate)"),
    _gpu("rtx-3060", "GeForce RTX 3060 12GB", 11938, (8, 6), 28, 12.7, 51, 360, ("3060", "rtx3060"),
         "techpowerup.com/gpu-specs"),
    _gpu("rtx-3080", "GeForce RTX 3080 10GB", 9987, (8, 6), 68, 29.8, 59.5, 760, ("3080", "rtx3080"),
         "techpowerup.com/gpu-specs"),
    _gpu("rtx-3090", "GeForce RTX 3090", 24260, (8, 6), 82, 35.6, 71, 936, ("3090", "rtx3090"),
         "techpowerup.com/gpu-specs"),
    _gpu("rtx-4090", "GeForce RTX 4090", 24210, (8, 9), 128, 82.6, 165, 1008, ("4090", "rtx4090"),
         "techpowerup.com/gpu-specs"),
    _gpu("a10g", "NVIDIA A10G", 22730, (8, 6), 80, 31.2, 125, 600, ("a10", "nvidia a10g"),
         "nvidia.com/en-us/data-center/products/a10-gpu (A10 figures; AWS publishes none for A10G)"),
    _gpu("l4", "NVIDIA L4", 22560, (8, 9), 58, 30.3, 121, 300, ("nvidia l4",),
         "nvidia.com/en-us/data-center/l4"),
    _gpu("a100-40gb", "NVIDIA A100-SXM4-40GB", 40536, (8, 0), 108, 19.5, 312, 1555, ("a100", "a100-40", "a100 40gb"),
         "nvidia.com/en-us/data-center/a100"),
    _gpu("a100-80gb", "NVIDIA A100-SXM4-80GB", 81050, (8, 0), 108, 19.5, 312, 2039, ("a100-80", "a100 80gb"),
         "nvidia.com/en-us/data-center/a100"),
    _gpu("h100", "NVIDIA H100 80GB HBM3", 81079, (9, 0), 132, 67, 989, 3350, ("h100-80gb", "h100-sxm", "h100 80gb hbm3"),
         "nvidia.com/en-us/data-center/h100; total_memory 85,017,493,504 B measured", context_bytes=595 * MiB),
    _gpu("h200", "NVIDIA H200", 143770, (9, 0), 132, 67, 989, 4800, ("h200-141gb", "nvidia h200"),
         "nvidia.com/en-us/data-center/h200", context_bytes=595 * MiB),
]}

# A target given by memory size alone runs these rules (an Ampere consumer card).
DEFAULT_ARCH = CATALOGUE["rtx-3060"]


class UnknownGPU(ValueError):
    pass


def _norm(name: str) -> str:
    s = re.sub(r"^(nvidia|geforce|tesla)\s+", "", name.strip().lower())
    return re.sub(r"[\s_]+", "-", s)


def lookup(name: str) -> GPU:
    """Forgiving match: 't4', 'Tesla T4', 'a100-80gb', 'NVIDIA H100 80GB HBM3'."""
    wanted = _norm(name)
    for gpu in CATALOGUE.values():
        names = {gpu.key, _norm(gpu.name), *(_norm(a) for a in gpu.aliases)}
        if wanted in names or wanted.replace("-", "") in {n.replace("-", "") for n in names}:
            return gpu
    choices = sorted({gpu.key for gpu in CATALOGUE.values()})
    close = difflib.get_close_matches(wanted, choices, n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UnknownGPU(f"unknown GPU {name!r}; {hint}known: {', '.join(choices)} (see `sa-profile gpus`)")


def custom(memory: int, arch: GPU = DEFAULT_ARCH) -> GPU:
    """A card with `memory` bytes (as torch would report it) and `arch`'s rules and rates."""
    return replace(
        arch,
        key=f"custom-{memory}",
        name=f"{memory / GiB:g} GiB GPU",
        total_memory=memory,
        aliases=(),
        assumed=f"compute capability {arch.capability[0]}.{arch.capability[1]} and the peak rates of {arch.name}",
        source="given by memory size",
    )


def resized(gpu: GPU, memory: int) -> GPU:
    """`gpu`'s architecture and rates with `memory` bytes (a card emulated with a memory cap)."""
    return replace(gpu, key=f"{gpu.key}@{memory}", name=f"{gpu.name} capped to {memory / GiB:g} GiB",
                   total_memory=memory, local=False, assumed=f"{gpu.name} with {memory / GiB:g} GiB")


HOST = "cpu"


def host() -> GPU:
    """The CPU and its memory, as a sweep target (`--gpu cpu`): rates are not modelled."""
    import os
    import platform

    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        memory = 0
    return GPU(HOST, f"CPU ({platform.machine() or 'host'}, {os.cpu_count()} cores)", memory, (0, 0), os.cpu_count() or 1,
               0.0, 0.0, 0.0, context_bytes=0, source="this machine's memory (os.sysconf)")


def local(index: int = 0) -> GPU:
    """The local CUDA card, with rates from the catalogue entry of the same name if known."""
    props = torch.cuda.get_device_properties(index)
    try:
        known = lookup(props.name)
    except UnknownGPU:
        known = custom(props.total_memory, DEFAULT_ARCH)
    return replace(
        known,
        name=props.name,
        total_memory=props.total_memory,
        capability=(props.major, props.minor),
        sms=props.multi_processor_count,
        local=True,
        source=f"local device cuda:{index}",
    )
