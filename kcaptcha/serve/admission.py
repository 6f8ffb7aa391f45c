"""`Admission`: how many requests are in progress and how many body bytes they hold; 503 past the limits.

Only the event loop touches these counters, so they need no lock.
"""

from kcaptcha.serve.limits import Limits, RETRY_AFTER_SECONDS, SMALL_BODY_BYTES
from kcaptcha.serve.uploads import ApiError

BUSY_HEADERS = {"Retry-After": str(RETRY_AFTER_SECONDS)}
CLOSE_HEADERS = {**BUSY_HEADERS, "Connection": "close"}  # for answers sent before the body was read


class Admission:
    def __init__(self, limits: Limits, metrics):
        self.limits, self.metrics = limits, metrics
        self.in_progress = 0
        self.body_bytes = 0  # held by every body
        self.large_body_bytes = 0  # held by bodies over SMALL_BODY_BYTES
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


class BodyAllowance:
    """One request's share of `max_bytes_in_flight`, grown as its body arrives and released at its end."""

    def __init__(self, admission: Admission):
        self.admission, self.held, self.large = admission, 0, False

    def grow(self, count: int) -> None:
        """Holds `count` more bytes of the body; `ApiError(503)` when they do not fit."""
        admission, limits = self.admission, self.admission.limits
        large = self.large or self.held + count > SMALL_BODY_BYTES
        large_after = admission.large_body_bytes + count + (0 if self.large or not large else self.held)
        if admission.body_bytes + count > limits.max_bytes_in_flight or (
                large and large_after > limits.large_bodies_bytes):
            admission.metrics.rejected.labels("bytes_in_flight").inc()
            raise ApiError(503, "busy", "The server holds as many request bodies as it can; retry shortly",
                           CLOSE_HEADERS)
        admission.body_bytes += count
        if large:
            admission.large_body_bytes = large_after
        self.held, self.large = self.held + count, large

    def release(self) -> None:
        admission = self.admission
        admission.body_bytes -= self.held
        if self.large:
            admission.large_body_bytes -= self.held
        self.held = 0
