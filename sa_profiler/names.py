"""The names a user may give, without torch: dtypes, attention implementations, SDPA backends,
optimizers, activation checkpointing and gradient accumulation settings. The modules that act
on them (engine/workload.py, attention/registry.py, attention/backends.py, models/fit.py,
models/blocks.py) read these, so an option is checked before torch loads and the two lists
cannot drift apart."""

DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float64": "float64", "fp64": "float64",
}
DTYPE_FORM = "fp32, fp16, bf16 or fp64 (also float32, float16, bfloat16, float64)"
IMPLEMENTATIONS = ("reference", "sdpa", "chunked", "pooled")
BACKENDS = ("math", "efficient", "flash", "cudnn")
OPTIMIZERS = ("sgd", "sgd-momentum", "adam", "adamw", "adam-fused", "adamw-fused", "adafactor", "adamw8bit")
AMP = ("fp16", "bf16")
PLAN_KINDS = ("accumulation", "precision", "attention", "checkpointing", "optimizer", "parallel")  # `plan --try`
# the first torch release with each fused optimizer's kernels: on CUDA, torch._fused_adam_ (1.13)
# and torch._fused_adamw_ (2.0); on the CPU both from 2.4 (aten/src/ATen/native/FusedAdam.cpp)
FUSED_TORCH = {"adam-fused": {"cuda": "1.13", "cpu": "2.4"}, "adamw-fused": {"cuda": "2.0", "cpu": "2.4"}}
# an optimizer from another package: (the module it comes from, the package to install, its words)
OPTIMIZER_PACKAGES = {"adafactor": ("transformers", "transformers", "Adafactor"),
                      "adamw8bit": ("bitsandbytes", "bitsandbytes", "8-bit AdamW")}


def optimizer_available(name: str) -> str | None:
    """None where optimizer `name` can run here, else the one-line reason (an unknown name, or
    the package it comes from not installed); found without importing torch or the package."""
    import importlib.util

    if name not in OPTIMIZERS:
        return f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}"
    if name not in OPTIMIZER_PACKAGES:
        return None
    module, package, words = OPTIMIZER_PACKAGES[name]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else f"{words} needs {package}, which is not installed (pip install {package})"


def fused_unsupported(name: str, target: str, torch_version: str) -> str | None:
    """Why a fused optimizer cannot run on `target` ("cuda" or "cpu") under torch
    `torch_version` (the first release with its kernels: `FUSED_TORCH`), or None."""
    first = FUSED_TORCH.get(name, {}).get(target)
    if first is None:
        return None
    have = tuple(int(x) for x in torch_version.split("+")[0].split(".")[:2])
    if have >= tuple(int(x) for x in first.split(".")):
        return None
    where = "CUDA" if target == "cuda" else "the CPU"
    return f"{name} needs torch {first} or later on {where} (its fused kernels); torch {torch_version} has none"


def dtype_name(text: str) -> str:
    """`fp16` -> `float16`; ValueError naming the accepted forms."""
    try:
        return DTYPE_NAMES[text.strip().lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown dtype {text!r}; expected {DTYPE_FORM}") from None


CHECKPOINTING_FORM = "all, every-K (every K-th repeated block from the first, K a positive integer) or selective"
SELECTIVE_TORCH = "2.4"  # torch.utils.checkpoint.create_selective_checkpoint_contexts is public from 2.4


def checkpointing(text: str | None) -> tuple[str | None, int]:
    """Which repeated blocks a --checkpointing setting checkpoints: (None, 0) for none, ("all", 1),
    ("every", K) for every K-th, ("selective", 1); ValueError naming the accepted forms."""
    if text is None:
        return None, 0
    value = str(text).strip().lower()
    if value in ("all", "selective"):
        return value, 1
    kind, sep, k = value.partition("-")
    if kind == "every" and sep and k.isascii() and k.isdigit() and int(k) >= 1:
        return "every", int(k)
    raise ValueError(f"unknown --checkpointing {text!r}; expected {CHECKPOINTING_FORM}")


def accumulation(value) -> int:
    """Micro-steps per optimizer step: a positive integer; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"--accumulation must be a positive integer (micro-steps per optimizer step), got {value!r}")
    return value


# the first torch release each parallel strategy runs on: DDP since before the oldest supported
# release; FSDP2's fully_shard public as torch.distributed.fsdp.fully_shard from 2.6 (under
# torch.distributed._composable.fsdp before, which this tool does not use)
STRATEGY_TORCH = {"ddp": "2.4", "fsdp": "2.6"}
STRATEGY_NAMES = {"ddp": "DDP", "fsdp": "FSDP2"}


def strategy_unsupported(strategy: str, torch_version: str) -> str | None:
    """Why `strategy` cannot run under torch `torch_version` (torch-free), or None."""
    first = STRATEGY_TORCH.get(strategy)
    if first is None:
        return None
    have = tuple(int(x) for x in torch_version.split("+")[0].split(".")[:2])
    if have >= tuple(int(x) for x in first.split(".")):
        return None
    return (f"--parallel {strategy} needs torch {first} or later (torch.distributed.fsdp.fully_shard); "
            f"this is {torch_version}")
