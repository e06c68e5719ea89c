"""`python -m sa_profiler.validation`: the accuracy tables (see `accuracy.py`)."""

from sa_profiler.validation.accuracy import main

main()
