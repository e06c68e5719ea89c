"""`from sa_profiler.fit import fit`, as the README shows: the whole-model answer's public place.
The code is in `sa_profiler/models/` (`fit.py`, `loading.py`)."""

from sa_profiler.models.fit import FitError, FitResult, StepResult, fit, max_batch, run_step  # noqa: F401
from sa_profiler.models.loading import factory_of, load, meta_copy  # noqa: F401
