"""The AMP names a fit takes (`fp16`, `bf16`); the autocast emulation itself is the engine's
(engine/amp.py), which the step runner switches on. Kept here for the fit's imports."""

from sa_profiler.engine.amp import DTYPES, AutocastEmulation  # noqa: F401
