"""Length-sorted inference batches, shared by every task's prediction loop."""

from __future__ import annotations

from collections.abc import Sequence

from regtune.core.errors import ConfigError


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Group sequence indices into evaluation batches of similar length, longest first.

    Sorting by length means each batch pads to little more than its own rows; longest first means an
    out-of-memory error comes on the first batch rather than the last. Ties keep index order.

    Args:
        lengths: Real-token count of each sequence (the ``length`` column).
        batch_size: Sequences per batch; the last batch may be smaller.

    Returns:
        Batches of indices into ``lengths``; together they hold every index exactly once.

    Raises:
        ConfigError: if ``batch_size`` is not positive.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
