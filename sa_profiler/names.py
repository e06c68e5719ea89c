"""The names a user may give, without torch: dtypes, attention implementations, SDPA backends,
optimizers. The modules that act on them (engine/workload.py, attention/registry.py,
attention/backends.py, models/fit.py) read these, so an option is checked before torch loads
and the two lists cannot drift apart."""

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
