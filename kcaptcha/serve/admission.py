"""`Admission`: the request budget (requests in progress) and the body budget (body bytes held in memory).

A request is counted in progress only once its body has arrived: a client that sends its headers and then
stalls (or trickles) holds a connection and the bytes it sent, never a request slot that others need. When
the body budget is full, the slowest body that has been arriving for over `CUT_AFTER_SECONDS` is cut
(answered 408 and closed) to make room, so slow clients cannot keep fast ones out. Only the event loop
touches these counters, so they need no lock.
"""

import asyncio
import time

from kcaptcha.serve import memory
from kcaptcha.serve.limits import Limits, RETRY_AFTER_SECONDS, SMALL_BODY_BYTES
from kcaptcha.serve.uploads import ApiError

BUSY_HEADERS = {"Retry-After": str(RETRY_AFTER_SECONDS)}
CLOSE_HEADERS = {**BUSY_HEADERS, "Connection": "close"}  # for answers sent before the body was read
TRIM_AFTER_BYTES = 256 * 1024  # freeing a body this large asks for the free memory to be given back
CUT_AFTER_SECONDS = 1.0  # a body younger than this is never cut to make room: it may just be starting


class BodyCut(Exception):
    """The body was cut to make room for faster clients (raised in the task that was reading it)."""


class Admission:
    def __init__(self, limits: Limits, metrics):
        self.limits, self.metrics = limits, metrics
        self.in_progress = 0
        self.body_bytes = 0  # held by every body
        self.large_body_bytes = 0  # held by bodies over SMALL_BODY_BYTES
        self.arriving = set()  # the allowances of bodies still arriving
        metrics.in_progress.set_function(lambda: self.in_progress)  # read when scraped: no cost per request
        metrics.body_bytes.set_function(lambda: self.body_bytes)

    def enter(self) -> None:
        """Counts one more request in progress; `ApiError(503)` when `max_concurrency` are already."""
        if self.in_progress >= self.limits.max_concurrency:
            self.metrics.rejected.labels("concurrency").inc()
            raise ApiError(503, "busy", f"{self.in_progress} requests are in progress, the most this server "
                                        "takes at once; retry shortly", CLOSE_HEADERS)
        self.in_progress += 1

    def leave(self) -> None:
        self.in_progress -= 1

    def body(self) -> "BodyAllowance":
        return BodyAllowance(self)

    def cut_slowest(self, keep: "BodyAllowance") -> bool:
        """Cuts the slowest body (fewest bytes per second) that has been arriving for over `CUT_AFTER_SECONDS`,
        other than `keep`; frees its bytes at once. False when there is none to cut."""
        now = time.monotonic()
        candidates = [a for a in self.arriving if a is not keep and a.task is not None
                      and now - a.started > CUT_AFTER_SECONDS]
        if not candidates:
            return False
        slowest = min(candidates, key=lambda a: a.received / (now - a.started))
        self.metrics.rejected.labels("slow_body").inc()
        slowest.cut()
        return True


class BodyAllowance:
    """One request's share of `max_bytes_in_flight`, grown as its body arrives and released at its end."""

    def __init__(self, admission: Admission):
        self.admission, self.held, self.large = admission, 0, False
        self.entered, self.was_cut, self.received, self.task = False, False, 0, None
        self.started = time.monotonic()

    def arriving(self) -> None:
        """The body starts to arrive, in the current task: it may be cut from now until `arrived()`."""
        self.task, self.started = asyncio.current_task(), time.monotonic()
        self.admission.arriving.add(self)

    def arrived(self) -> None:
        """The whole body is here: it can no longer be cut, and the request now counts in progress."""
        self.admission.arriving.discard(self)
        self.task = None
        self.admission.enter()
        self.entered = True

    def grow(self, count: int) -> None:
        """Holds `count` more bytes of the body, cutting slower bodies to make room; `ApiError(503)` when they
        do not fit even so."""
        while not self._fits(count):
            if not self.admission.cut_slowest(keep=self):
                self.admission.metrics.rejected.labels("bytes_in_flight").inc()
                raise ApiError(503, "busy", "The server holds as many request bodies as it can; retry shortly",
                               CLOSE_HEADERS)
        admission, large = self.admission, self.large or self.held + count > SMALL_BODY_BYTES
        admission.body_bytes += count
        if large:
            admission.large_body_bytes += count + (0 if self.large else self.held)
        self.held, self.large = self.held + count, large

    def _fits(self, count: int) -> bool:
        admission, limits = self.admission, self.admission.limits
        large = self.large or self.held + count > SMALL_BODY_BYTES
        large_after = admission.large_body_bytes + count + (0 if self.large or not large else self.held)
        return admission.body_bytes + count <= limits.max_bytes_in_flight and (
            not large or large_after <= limits.large_bodies_bytes)

    def cut(self) -> None:
        """Frees this body's bytes now and makes the task reading it raise `BodyCut`."""
        self.was_cut = True
        self.release()
        self.admission.arriving.discard(self)
        if self.task is not None:
            self.task.cancel()
            self.task = None

    def release(self) -> None:
        """Gives back the body's bytes and, once counted in progress, its request slot."""
        admission = self.admission
        admission.arriving.discard(self)
        if self.held > TRIM_AFTER_BYTES:
            memory.trim_soon()
        admission.body_bytes -= self.held
        if self.large:
            admission.large_body_bytes -= self.held
        self.held, self.large = 0, False
        if self.entered:
            self.entered = False
            admission.leave()
