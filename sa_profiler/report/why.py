"""The "Why" paragraph's figure, as every view says it (console and HTML alike)."""

from __future__ import annotations

from sa_profiler.units import format_bytes


def why_peak(why: dict) -> str:
    """The classic layer's peak for one image, said with the rows' "1 image" figure it differs
    from: the peak is above the baseline, the "1 image" figure includes it."""
    return (f"peak {format_bytes(why['peak_bytes'])} above the baseline of {format_bytes(why['baseline_bytes'])} "
            f"(parameters, input, library workspaces): {format_bytes(why['total_bytes'])} in all, the \"1 image\" "
            "figure above")
