"""sa-profiler: how much memory and time SAGAN self-attention needs, before it runs out."""

__version__ = "0.1.0"

__all__ = ["__version__", "IMPLEMENTATIONS", "build", "convert"]


def __getattr__(name):  # torch is imported on first use, so a kept CLI answer needs none
    if name in ("IMPLEMENTATIONS", "build", "convert"):
        from sa_profiler import attention

        return getattr(attention, name)
    raise AttributeError(f"module 'sa_profiler' has no attribute {name!r}")
