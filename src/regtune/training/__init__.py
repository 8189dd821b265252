"""Training on top of a task: the run config and presets, and the HF Trainer pipeline."""
