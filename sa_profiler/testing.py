"""A pytest helper: keep "this model trains on a T4 at batch 32" as a test in your own CI.

    from sa_profiler.testing import assert_fits

    def test_generator_trains_on_a_t4():
        assert_fits(Generator, 128, batch=32, target="t4", optimizer="adam")
"""

from __future__ import annotations

from sa_profiler.models.fit import fit
from sa_profiler.units import format_bytes


def assert_fits(model, input_shape, batch: int, target="t4", **options):
    """Fail with the peak, the usable memory and the breakdown unless a training step fits."""
    result = fit(model, input_shape, batch, target, **options)
    if not result.fits:
        s = result.step
        parts = ", ".join(f"{k} {format_bytes(v)}" for k, v in s.breakdown.items() if v)
        peak = format_bytes(s.peak_total) if s.peak_total is not None else f"more than the card ({s.message})"
        why = f" ({s.message})" if getattr(s, "fits_cap", None) is False else ""
        raise AssertionError(f"{result.model} at batch {batch} needs {peak} on {result.card}, "
                             f"{format_bytes(result.usable)} usable{why}: {parts}")
    return result
