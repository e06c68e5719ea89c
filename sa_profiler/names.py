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
OPTIMIZERS = ("sgd", "sgd-momentum", "adam", "adamw")
AMP = ("fp16", "bf16")


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
