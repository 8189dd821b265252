"""Keep freed memory inside the process when training on CPU, so no step maps its activations in again.

Why: glibc's malloc serves every block above its mmap threshold (128 KiB at first, adapting up to at
most 32 MiB on 64-bit Linux) with a fresh ``mmap`` and gives it back with ``munmap`` on free. One
training step of MiniLM at the seed recipe's batch of 8 × 434 tokens allocates and frees many such blocks
(the attention probabilities alone are 8 × 12 × 434² × 4 B = 72 MiB per layer), so on every step the
kernel maps and zeroes them again: 669,868 page faults and 2.44 s of system time in a 7.07 s step on a
2-core AVX2 EPYC (``benchmarks/cpu_allocator.py`` measures it side by side; docs/benchmarks.md). With
mmap and trimming off, a freed block stays on the heap and the next step reuses it; the arithmetic, and
so every result, is the same (the allocator never touches values).

The cost is memory: the process keeps the high-water mark of its heap while it trains (+14 % at the seed
recipe's shape). :func:`release_freed_memory` hands the free part back once training ends. glibc still
falls back to mmap where the heap cannot grow, so no allocation fails for want of it.

Why not a library: PyTorch's CPU tuning guide suggests preloading jemalloc or tcmalloc, which needs a
system package and ``LD_PRELOAD`` set before Python starts; glibc's own ``mallopt`` does the same job for
this pattern from inside the running process. Set ``REGTUNE_MALLOC=default`` to keep glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

logger = logging.getLogger(__name__)

# glibc's malloc.h parameter numbers; a trim threshold of -1 turns trimming off (mallopt(3)).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: Opt-out: set to ``default`` to leave the allocator alone.
ENV_VAR = "REGTUNE_MALLOC"

_applied: bool | None = None


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Switch glibc malloc to reuse freed blocks (no mmap, no trim); True when it is now in effect.

    Idempotent and process-wide. Returns False (and changes nothing) off glibc, e.g. on macOS or musl,
    which lack these parameters, or when ``REGTUNE_MALLOC=default``.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if os.environ.get(ENV_VAR, "").strip().lower() != "default" and mallopt is not None:
        # mallopt returns 1 on success. If only the first call took, mmap is off and trimming is on:
        # a valid state, with fewer faults than before, so it is left as it is.
        _applied = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, -1) == 1
        if _applied:
            logger.info(
                "CPU training: malloc keeps freed memory for reuse (REGTUNE_MALLOC=default to opt out)"
            )
    return _applied


def release_freed_memory() -> None:
    """Return the heap's free pages to the OS (``malloc_trim``) if :func:`keep_freed_memory` took effect."""
    libc = _libc() if _applied else None
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
