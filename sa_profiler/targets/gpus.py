"""The GPU catalogue: what a card has, as torch reports it, and what runs on it.

`total_memory` is `torch.cuda.get_device_properties(i).total_memory` in bytes (what torch
sees, below the marketing size). Peak rates are dense, from the vendors' datasheets and the
TechPowerUp GPU database (fp16 = tensor cores with fp32 accumulate where they exist).
`context_bytes` is the CUDA context and library handles that the card loses but
`max_memory_allocated` does not count: about 300 MiB with lazy module loading (CUDA >= 11.7,
pytorch#107667); 527 MiB measured on an H100 with torch 2.11 / CUDA 13 after init, and
~595 MiB after the first cuBLAS call. We use 512 MiB everywhere unless measured otherwise.
Memory sizes other than the T4's and the H100's are typical readings (+-50 MiB by driver/ECC)
or, for cards without a reading, the nominal size less 350 MiB; `sa-profile gpus` says which.
Each card also carries its SM count (flash split-KV) and the shared memory a block may opt
into (which memory-efficient backward kernel runs, engine/mem_eff.py), both cited.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the catalogue imports without torch: options are checked before it loads
    import torch

    from sa_profiler.attention.backends import DeviceCaps

KiB = 2**10
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
    smem_per_block: int = 48 * 1024  # sharedMemPerBlockOptin, bytes
    memory_source: str = ""
    sms_source: str = ""
    offered_by: str = ""  # hosted notebooks that hand this card out

    def provenance(self) -> dict[str, str]:
        """Where each figure comes from."""
        return {"total_memory": self.memory_source or self.source, "compute_capability": CC_SOURCE,
                "sms": self.sms_source, "smem_per_block": SMEM_SOURCE, "rates": self.source}

    @property
    def bf16(self) -> bool:
        return self.capability >= (8, 0)

    def caps(self, torch_version: str | None = None) -> DeviceCaps:
        """The selection facts of this card under `torch_version` (default: the running torch);
        the cuDNN version is not known (backends.assumed_cudnn)."""
        import torch

        from sa_profiler.attention.backends import DeviceCaps, cudnn_preferred

        version = torch_version or torch.__version__
        pref = cudnn_preferred(self.capability, version, None)
        return DeviceCaps("cuda", self.capability, cudnn_preferred=pref, torch_version=version)

    def supports(self, dtype: torch.dtype) -> str | None:
        """Why the card cannot compute in `dtype`, or None."""
        import torch

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


# Shared memory one thread block may opt into (`cudaDevAttrMaxSharedMemoryPerBlockOptin`, what
# `sharedMemPerBlockOptin` reports): CUDA C++ Programming Guide, "Technical Specifications per
# Compute Capability" (maximum amount of shared memory per thread block).
SMEM_PER_BLOCK_OPTIN = {
    (6, 0): 48 * KiB, (6, 1): 48 * KiB, (7, 0): 96 * KiB, (7, 5): 64 * KiB, (8, 0): 163 * KiB,
    (8, 6): 99 * KiB, (8, 7): 163 * KiB, (8, 9): 99 * KiB, (9, 0): 227 * KiB, (10, 0): 227 * KiB,
    (12, 0): 99 * KiB,
}
SMEM_SOURCE = "CUDA C++ Programming Guide, Technical Specifications per Compute Capability (max shared memory per block, opt-in)"
CC_SOURCE = "developer.nvidia.com/cuda-gpus (compute capability)"
# what torch reports for cards nobody here has read: the nominal size less 350 MiB (the RTX
# 3060's 12288 -> 11938 MiB, the largest gap among the consumer readings), on the safe side
NOMINAL_LESS = 350
ESTIMATED = f"estimate: nominal less {NOMINAL_LESS} MiB"
TYPICAL = "typical torch reading (+-50 MiB)"
TPU = "techpowerup.com/gpu-specs"


def _gpu(key, name, mib, cc, sms, fp32, fp16, bw_gbs, aliases=(), source="", memory_source=TYPICAL,
         sms_source=TPU, offered_by="", **kw) -> GPU:
    return GPU(key, name, mib * MiB, cc, sms, fp32 * TFLOPS, fp16 * TFLOPS, bw_gbs * 1e9, tuple(aliases), source=source,
               smem_per_block=SMEM_PER_BLOCK_OPTIN[cc], memory_source=memory_source, sms_source=sms_source,
               offered_by=offered_by, **kw)


def _nominal(gb: int) -> int:
    return gb * 1024 - NOMINAL_LESS


GEFORCE = f"{TPU} (fp16: tensor cores with fp32 accumulate)"
ADA = f"{TPU} (fp16 with fp32 accumulate: 512 FLOP/clock/SM at boost, as the RTX 4090's 165 TF)"

CATALOGUE: dict[str, GPU] = {g.key: g for g in [
    # Pascal: no tensor cores; torch runs fp16 matmuls with fp32 compute, so fp16 is costed at
    # the fp32 rate (GP102's native fp16 is 1/64 of it)
    _gpu("p100", "Tesla P100 16GB", 16280, (6, 0), 56, 9.3, 18.7, 732, ("tesla p100", "p100-16gb", "kaggle-p100"),
         "nvidia.com Tesla P100 datasheet (PCIe); fp16 is 2x fp32, no tensor cores", sms_source="NVIDIA Tesla P100 whitepaper",
         offered_by="Kaggle"),
    _gpu("titan-x-pascal", "NVIDIA TITAN X (Pascal)", _nominal(12), (6, 1), 28, 11.0, 11.0, 480,
         ("titan x", "titan-x", "titanx", "titan x pascal"), TPU + "; fp16 at the fp32 rate (see note)", ESTIMATED),
    _gpu("titan-xp", "NVIDIA TITAN Xp", _nominal(12), (6, 1), 30, 12.1, 12.1, 547.6, ("titanxp", "titan xp"),
         TPU + "; fp16 at the fp32 rate (see note)", ESTIMATED),
    # Volta / Turing
    _gpu("v100-16gb", "Tesla V100 16GB", 16160, (7, 0), 80, 15.7, 125, 900, ("v100", "tesla v100", "colab-v100"),
         "nvidia.com/en-us/data-center/v100 (SXM2)", sms_source="NVIDIA Tesla V100 whitepaper", offered_by="Colab (earlier)"),
    _gpu("v100-32gb", "Tesla V100 32GB", 32510, (7, 0), 80, 15.7, 125, 900, ("tesla v100 32gb",),
         "nvidia.com/en-us/data-center/v100 (SXM2)", sms_source="NVIDIA Tesla V100 whitepaper"),
    _gpu("t4", "Tesla T4", 15095, (7, 5), 40, 8.1, 65, 320, ("tesla t4", "colab", "colab-t4", "kaggle", "kaggle-t4"),
         "nvidia.com/en-us/data-center/tesla-t4", "15095 MiB as torch reports it on Colab",
         sms_source="NVIDIA Turing whitepaper (TU104, 40 SMs in T4)", offered_by="Colab (free), Kaggle (T4 x2)"),
    _gpu("rtx-2060-12gb", "GeForce RTX 2060 12GB", _nominal(12), (7, 5), 34, 7.2, 28.7, 336,
         ("2060 12gb", "rtx2060-12gb", "rtx 2060 12gb"), GEFORCE, ESTIMATED),
    _gpu("rtx-2080-ti", "GeForce RTX 2080 Ti", 11011, (7, 5), 68, 13.4, 53.8, 616, ("2080ti", "2080 ti", "rtx2080ti"),
         GEFORCE),
    # Ampere
    _gpu("rtx-3060", "GeForce RTX 3060 12GB", 11938, (8, 6), 28, 12.7, 51, 360, ("3060", "rtx3060"), GEFORCE),
    _gpu("rtx-3080", "GeForce RTX 3080 10GB", 9987, (8, 6), 68, 29.8, 59.5, 760, ("3080", "rtx3080"), GEFORCE),
    _gpu("rtx-3080-12gb", "GeForce RTX 3080 12GB", _nominal(12), (8, 6), 70, 30.6, 61.3, 912,
         ("3080 12gb", "rtx3080-12gb", "rtx 3080 12gb"), GEFORCE, ESTIMATED),
    _gpu("rtx-3090", "GeForce RTX 3090", 24260, (8, 6), 82, 35.6, 71, 936, ("3090", "rtx3090"), GEFORCE),
    _gpu("a4000", "NVIDIA RTX A4000", _nominal(16), (8, 6), 48, 19.2, 76.7, 448, ("rtx a4000", "rtx-a4000"),
         "nvidia.com RTX A4000 datasheet (tensor 153.4 TF with sparsity, halved)", ESTIMATED),
    _gpu("a6000", "NVIDIA RTX A6000", 48640, (8, 6), 84, 38.7, 154.8, 768, ("rtx a6000", "rtx-a6000"),
         "nvidia.com RTX A6000 datasheet (tensor 309.7 TF with sparsity, halved)",
         "estimate: nvidia-smi's 49140 MiB (ECC off) less 500 MiB"),
    _gpu("a10g", "NVIDIA A10G", 22730, (8, 6), 80, 31.2, 125, 600, ("a10", "nvidia a10g"),
         "nvidia.com/en-us/data-center/products/a10-gpu (A10 figures; AWS publishes none for A10G)"),
    _gpu("a100-40gb", "NVIDIA A100-SXM4-40GB", 40536, (8, 0), 108, 19.5, 312, 1555,
         ("a100", "a100-40", "a100 40gb", "colab-a100"), "nvidia.com/en-us/data-center/a100",
         sms_source="NVIDIA A100 whitepaper", offered_by="Colab (paid)"),
    _gpu("a100-80gb", "NVIDIA A100-SXM4-80GB", 81050, (8, 0), 108, 19.5, 312, 2039, ("a100-80", "a100 80gb"),
         "nvidia.com/en-us/data-center/a100", sms_source="NVIDIA A100 whitepaper"),
    # Ada
    _gpu("rtx-4060-ti-16gb", "GeForce RTX 4060 Ti 16GB", _nominal(16), (8, 9), 34, 22.1, 44.1, 288,
         ("4060 ti", "4060ti", "rtx 4060 ti", "rtx4060ti"), ADA, ESTIMATED),
    _gpu("rtx-4070", "GeForce RTX 4070", _nominal(12), (8, 9), 46, 29.1, 58.3, 504, ("4070", "rtx4070"), ADA, ESTIMATED),
    _gpu("rtx-4070-super", "GeForce RTX 4070 SUPER", _nominal(12), (8, 9), 56, 35.5, 71.0, 504,
         ("4070 super", "4070super", "rtx4070super"), ADA, ESTIMATED),
    _gpu("rtx-4070-ti", "GeForce RTX 4070 Ti", _nominal(12), (8, 9), 60, 40.1, 80.2, 504, ("4070 ti", "4070ti", "rtx4070ti"),
         ADA, ESTIMATED),
    _gpu("rtx-4070-ti-super", "GeForce RTX 4070 Ti SUPER", _nominal(16), (8, 9), 66, 44.1, 88.2, 672,
         ("4070 ti super", "4070tisuper"), ADA, ESTIMATED),
    _gpu("rtx-4080", "GeForce RTX 4080", _nominal(16), (8, 9), 76, 48.7, 97.5, 716.8, ("4080", "rtx4080"), ADA, ESTIMATED),
    _gpu("rtx-4090", "GeForce RTX 4090", 24210, (8, 9), 128, 82.6, 165, 1008, ("4090", "rtx4090"), GEFORCE),
    _gpu("l4", "NVIDIA L4", 22560, (8, 9), 58, 30.3, 121, 300, ("nvidia l4", "colab-l4"),
         "nvidia.com/en-us/data-center/l4", offered_by="Colab (paid)"),
    _gpu("l40s", "NVIDIA L40S", 45568, (8, 9), 142, 91.6, 362, 864, ("nvidia l40s",),
         "nvidia.com/en-us/data-center/l40s (tensor 733 TF with sparsity, halved)",
         "estimate: nvidia-smi's 46068 MiB (48 GB, ECC on) less 500 MiB"),
    # Hopper
    _gpu("h100", "NVIDIA H100 80GB HBM3", 81079, (9, 0), 132, 67, 989, 3350, ("h100-80gb", "h100-sxm", "h100 80gb hbm3"),
         "nvidia.com/en-us/data-center/h100", "85,017,493,504 B measured", sms_source="measured (multi_processor_count)",
         context_bytes=595 * MiB),
    _gpu("h200", "NVIDIA H200", 143770, (9, 0), 132, 67, 989, 4800, ("h200-141gb", "nvidia h200"),
         "nvidia.com/en-us/data-center/h200", sms_source="NVIDIA H200 datasheet (GH100, as H100 SXM)", context_bytes=595 * MiB),
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
    import torch

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
        smem_per_block=getattr(props, "shared_memory_per_block_optin", None)
        or SMEM_PER_BLOCK_OPTIN.get((props.major, props.minor), known.smem_per_block),
        local=True,
        source=f"local device cuda:{index}",
        memory_source=f"local device cuda:{index}",
        sms_source=f"local device cuda:{index}",
    )
