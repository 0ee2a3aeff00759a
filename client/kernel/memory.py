"""How a process that streams big byte chunks keeps its memory: freed chunks are kept for
the next ones instead of being handed back to the kernel at once.

Every chunk of a stream (512 KiB to 1 MiB: gRPC messages, file reads, inflated pieces) is
a fresh allocation. glibc's defaults give such blocks back to the kernel as soon as they are
freed (mmap for big ones, heap trimming past 128 KiB free), so the next chunk takes new
pages: a page fault and a page cleared per 4 KiB, which cost more CPU than the copying
itself. Unpacking a 1 GiB import took 90,000 page faults, tuned 5,200; gunzipping 100 MiB
in a thread 35,800, tuned 1,900 (and as many for 500 MiB).
Past the thresholds below, glibc behaves as before; what a process keeps is bounded.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt's parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

# Blocks up to this size come from the heap and are reused; bigger ones (a message near
# gRPC's 8 MiB limit) are mapped and unmapped as before. Streams move 512 KiB chunks.
MMAP_THRESHOLD = 4 * 1024 * 1024
# Free memory at the top of a heap kept for reuse, and the margin a heap grows by.
TRIM_THRESHOLD = 8 * 1024 * 1024
TOP_PAD = 1024 * 1024
# Heaps (arenas) threads share: each may keep TRIM_THRESHOLD + TOP_PAD free, so a process
# keeps at most about 36 MiB it does not use (glibc's default allows 8 per core).
ARENA_MAX = 4

_tuned: bool | None = None


def keep_freed_chunks() -> bool:
    """Tunes glibc's allocator for streaming (once per process); False where the C library
    is not glibc (nothing changes there)."""
    global _tuned
    if _tuned is None:
        _tuned = _tune()
    return _tuned


def _tune() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process already runs on
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (M_TOP_PAD, TOP_PAD),
        (M_ARENA_MAX, ARENA_MAX),
    )
    results = [mallopt(param, value) for param, value in settings]  # each, whatever the others
    return all(result == 1 for result in results)
