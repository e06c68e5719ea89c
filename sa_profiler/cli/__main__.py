"""`python -m sa_profiler.cli`."""

from sa_profiler.cli import main

main()
