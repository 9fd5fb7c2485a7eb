"""Keeping freed memory in the process: glibc's malloc thresholds for a training process.

A TokenPPO update allocates and frees the same activation-sized blocks (hundreds of
kilobytes to megabytes) thousands of times. With glibc's defaults, blocks past its
mmap threshold are mapped fresh and unmapped on free, and a heap top past its trim
threshold is handed back to the kernel, so the next allocation is faulted in (and
zeroed) page by page again. ``benchmarks/allocator_churn.py`` measures what that
costs; the allocator changes no result.

:func:`retain_freed_memory` raises them with ``mallopt`` in the calling process. The
command line calls it for ``llm-gym compare`` and its ``--jobs`` workers, processes
it owns; importing llm_gym changes nothing. It leaves glibc alone when the user set
any of its ``MALLOC_*_`` variables or ``LLM_GYM_SYSTEM_MALLOC=1``, and off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["MALLOPT_SETTINGS", "retain_freed_memory"]

# mallopt parameter numbers of glibc's malloc.h, with the values set
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
#: what :func:`retain_freed_memory` sets: (mallopt parameter, bytes, glibc variable)
MALLOPT_SETTINGS = (
    (_M_MMAP_THRESHOLD, 256 * 2**20, "MALLOC_MMAP_THRESHOLD_"),
    (_M_TRIM_THRESHOLD, 2**30, "MALLOC_TRIM_THRESHOLD_"),
    (_M_TOP_PAD, 64 * 2**20, "MALLOC_TOP_PAD_"),
)


def retain_freed_memory() -> bool:
    """Raise glibc's mmap, trim and top-pad thresholds in this process; whether it did.

    Example:
        >>> from llm_gym.experiments.allocator import retain_freed_memory
        >>> isinstance(retain_freed_memory(), bool)
        True
    """
    if not sys.platform.startswith("linux") or os.environ.get("LLM_GYM_SYSTEM_MALLOC") == "1":
        return False
    if any(name in os.environ for _, _, name in MALLOPT_SETTINGS):
        return False  # the user tuned malloc: theirs wins
    path = ctypes.util.find_library("c")
    if path is None:
        return False
    libc = ctypes.CDLL(path)
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return False  # not glibc (musl has no such knobs)
    return all(libc.mallopt(param, value) == 1 for param, value, _ in MALLOPT_SETTINGS)
