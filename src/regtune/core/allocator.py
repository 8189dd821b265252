"""Keep freed memory inside the process when training on CPU, so no step maps its activations in again.

Why: glibc's malloc serves every block above its mmap threshold (32 MiB at most on 64-bit Linux, and
smaller until it adapts) with a fresh ``mmap`` and gives it back with ``munmap`` on free. One training
step of MiniLM at the seed recipe's batch of 8 × 434 tokens allocates and frees many such blocks (the
attention probabilities alone are 8 × 12 × 434² × 4 B = 72 MiB per layer), so on every step the kernel
maps and zeroes them again. On a 2-core AVX2 EPYC that was ~0.8 M page faults and 1.9 s of system time in
a 6.9 s step (``benchmarks/cpu_allocator.py`` measures it side by side). With mmap and trimming off, a
freed block stays on the heap and the next step reuses it; the arithmetic, and so every result, is the
same (the allocator never touches values).

The cost is memory: the process keeps its peak heap instead of handing freed blocks back to the OS.

Why not a library: PyTorch's CPU tuning guide suggests preloading jemalloc or tcmalloc, which needs a
system package and ``LD_PRELOAD`` set before Python starts; glibc's own ``mallopt`` does the same job for
this pattern from inside the running process. Set ``REGTUNE_MALLOC=default`` to keep glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

# glibc's malloc.h parameter numbers.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: The largest trim threshold mallopt takes (an int): the top of the heap is returned only above 2 GiB.
_TRIM_THRESHOLD = 2**31 - 1
#: Opt-out: set to ``default`` to leave the allocator alone.
ENV_VAR = "REGTUNE_MALLOC"

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Switch glibc malloc to reuse freed blocks (no mmap, no trim); True when it is now in effect.

    Idempotent and process-wide. Returns False (and changes nothing) off glibc, e.g. on macOS, or when
    ``REGTUNE_MALLOC=default``.
    """
    global _applied
    if _applied is not None:
        return _applied
    if os.environ.get(ENV_VAR, "").strip().lower() == "default":
        _applied = False
        return _applied
    name = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None) if name else None
    # mallopt returns 1 on success; musl has the symbol but ignores these parameters (returns 0).
    _applied = bool(mallopt is not None and mallopt(M_MMAP_MAX, 0) == 1)
    _applied = _applied and mallopt(M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    logger.debug("malloc keeps freed memory: %s", _applied)
    return _applied
