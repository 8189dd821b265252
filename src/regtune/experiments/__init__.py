"""Experiments on top of training: grids of runs (sweeps) and their statistics."""
