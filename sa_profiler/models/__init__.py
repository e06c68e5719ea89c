"""Whole models: loading, inputs, AMP, library models by name, and `fit`."""
