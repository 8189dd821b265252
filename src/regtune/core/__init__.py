"""The core: the register mechanism and what every layer above it shares (devices, models, files, errors).

Nothing here knows about a task: no spans, labels or metrics.
"""
