"""Giving freed memory back to the system, so the server's RSS returns to its level once a burst is over.

glibc keeps what a process frees for later: with its default, growing mmap threshold, buffers of a few MB
(decoded images, request bodies) land in the heap once one has been freed, and the heap's top is only
returned when it is free to the end. `return_freed_memory` fixes the threshold (large buffers are mapped and
unmapped on their own), caps the per-thread arenas, and `trim_soon` asks glibc to give back the free pages
of every arena (`malloc_trim`) shortly after large work ends, at most once per `TRIM_INTERVAL_SECONDS`.
Elsewhere than glibc (musl, macOS) these are no-ops.
"""

import ctypes
import ctypes.util
import logging
import threading

logger = logging.getLogger("kcaptcha.serve")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD_BYTES = 256 * 1024
TRIM_THRESHOLD_BYTES = 4 * 1024 * 1024
ARENAS = 2
TRIM_INTERVAL_SECONDS = 1.0


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # glibc only
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()
_trim_pending = threading.Event()
_lock = threading.Lock()


def return_freed_memory() -> bool:
    """Sets glibc's malloc to give large buffers back when they are freed; False where it is not glibc."""
    if _LIBC is None:
        return False
    ok = all(_LIBC.mallopt(parameter, value) == 1 for parameter, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES), (M_ARENA_MAX, ARENAS)))
    if not ok:
        logger.info("glibc did not take the memory settings; freed memory may stay with the process")
    return ok


def trim_soon() -> None:
    """Gives the free pages of every arena back within `TRIM_INTERVAL_SECONDS` (in a timer thread; at most one
    pending at a time, so any number of calls costs one trim)."""
    if _LIBC is None or _trim_pending.is_set():
        return
    with _lock:
        if _trim_pending.is_set():
            return
        _trim_pending.set()
        timer = threading.Timer(TRIM_INTERVAL_SECONDS, _trim)
        timer.daemon = True
        timer.start()


def _trim() -> None:
    _trim_pending.clear()
    _LIBC.malloc_trim(0)  # ctypes releases the GIL for the call
