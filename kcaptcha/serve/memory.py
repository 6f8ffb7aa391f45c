"""Giving freed memory back to the system, so the server's RSS returns to its level once a burst is over.

glibc keeps what a process frees for later: with its default, growing mmap threshold, buffers of a few MB
(decoded images, request bodies) land in the heap once one has been freed, and the heap's top is only
returned when it is free to the end. `return_freed_memory` fixes the threshold (large buffers are mapped and
unmapped on their own), caps the per-thread arenas, and `trim_soon` asks glibc
to give back the free pages of every arena (`malloc_trim`) once large work has stopped for
`QUIET_SECONDS`: a trim holds the allocator's locks for milliseconds, so it waits for a quiet moment rather
than stall requests during a burst (and runs anyway after `MAX_DELAY_SECONDS` of unbroken work).
Elsewhere than glibc (musl, macOS) these are no-ops.
"""

import ctypes
import ctypes.util
import logging
import threading
import time

logger = logging.getLogger("kcaptcha.serve")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD_BYTES = 256 * 1024
TRIM_THRESHOLD_BYTES = 4 * 1024 * 1024
ARENAS = 2
QUIET_SECONDS = 1.0
MAX_DELAY_SECONDS = 30.0


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # glibc only
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()
_lock = threading.Lock()
_asked = {"first": None, "last": 0.0}  # when trims were first and last asked for since the last trim
_thread = None


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
    """Asks for the free pages of every arena to be given back once large work has been quiet for
    `QUIET_SECONDS` (by one background thread; any number of calls costs one trim)."""
    global _thread
    if _LIBC is None:
        return
    now = time.monotonic()
    with _lock:
        if _asked["first"] is None:
            _asked["first"] = now
        _asked["last"] = now
        if _thread is None:
            _thread = threading.Thread(target=_trimmer, name="kcaptcha-trim", daemon=True)
            _thread.start()


def _trimmer() -> None:
    while True:
        with _lock:
            first, last = _asked["first"], _asked["last"]
        if first is None:
            time.sleep(QUIET_SECONDS)
            continue
        due = min(last + QUIET_SECONDS, first + MAX_DELAY_SECONDS)
        if time.monotonic() < due:
            time.sleep(due - time.monotonic())
            continue
        with _lock:
            _asked["first"] = None
        _LIBC.malloc_trim(0)  # ctypes releases the GIL for the call
