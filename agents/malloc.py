"""glibc's allocator, set for a process that holds gigabytes for days.

glibc serves a block above its mmap threshold with mmap, given back to the system
when freed, and raises the threshold to the size of each such block freed (up to
32 MiB). The worker frees blocks of 100 KB to tens of MB all the time (changelog
deltas, response snapshot parts, fetch buffers): once the threshold has risen they
come from the heap, where long-lived small objects between them keep it from
shrinking, and resident memory creeps up with every bound already full. A fixed
threshold (mallopt(3)) stops the adjustment.
"""

from __future__ import annotations

import ctypes
import os

M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
THRESHOLD = 128 * 1024  # glibc's initial threshold, kept


def fix_mmap_threshold() -> bool:
    """Fix the threshold unless MALLOC_MMAP_THRESHOLD_ already did (the operator's
    choice); True if set here. Not glibc (musl has no such adjustment): False."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD))
