"""sa-profiler: how much memory and time SAGAN self-attention needs, before it runs out."""

__version__ = "0.1.0"

from .attention import IMPLEMENTATIONS, build, convert  # noqa: E402

__all__ = ["__version__", "IMPLEMENTATIONS", "build", "convert"]
