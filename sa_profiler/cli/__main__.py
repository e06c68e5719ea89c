"""`python -m sa_profiler.cli`."""

from . import main

main()
