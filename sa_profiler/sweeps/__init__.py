"""Sweeps: the grid, its rows, executors (local, Ray), the lock and the files."""
