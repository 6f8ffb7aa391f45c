"""`DecodePool`: decodes each request's images off the event loop and off the batching threads, in two lanes.

A request's headers are read first (`uploads.probe`), in the light lane: the per-image and per-request pixel
limits hold before any pixel is decoded. A request whose images add up to at most `light_pixels` (a few
captchas) is then decoded in the same job; a larger one moves to the heavy lane, a thread of its own, so heavy
requests wait behind each other and never ahead of ordinary captchas. Work for a request that was
abandoned (client gone, deadline passed) is skipped between images. The decoding thread hands the model
inputs straight to the model's `Batcher` (through `deliver`): no trip through the event loop between.
"""

import concurrent.futures
import time
from typing import Callable, Sequence

from kcaptcha.serve import uploads
from kcaptcha.serve.uploads import ApiError, Upload

LIGHT_PIXELS = 1024 * 1024  # ~100 captchas of 100x100; one 4096x4096 image is 16 times that


class Abandoned(Exception):
    """The request was given up (its client left or its deadline passed) while its work waited."""


class Ticket:
    """One request's work, shared by the threads that do it: `abandon()` makes them skip what is left.
    `charset`: the characters the request's images are read with (None: the model's own)."""

    def __init__(self, charset=None):
        self.abandoned, self.charset = False, charset

    def abandon(self) -> None:
        self.abandoned = True

    def check(self) -> None:
        if self.abandoned:
            raise Abandoned()


class DecodePool:
    """The light lane (`light_threads`; one measured best on 2 cores beside the event loop and the model's
    thread) and the heavy lane (one thread)."""

    def __init__(self, light_threads: int = 1, light_pixels: int = LIGHT_PIXELS):
        self.light_pixels, self.closed = light_pixels, False
        self._light = concurrent.futures.ThreadPoolExecutor(light_threads, thread_name_prefix="kcaptcha-decode")
        self._heavy = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kcaptcha-decode-heavy")

    def close(self) -> None:
        self.closed = True
        for pool in (self._light, self._heavy):
            pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, recognizer, batch: Sequence[Upload], ticket: Ticket, max_image_pixels: int,
               max_request_pixels: int, deliver: Callable) -> None:
        """Decodes `batch` in a decoding thread, which then calls `deliver(arrays, error, seconds)`: the model
        inputs in order, or the first upload's `ApiError` (or `Abandoned`), and the seconds it took."""
        self._light.submit(self._probe_then_decode, recognizer, batch, ticket, max_image_pixels, max_request_pixels,
                           deliver, time.perf_counter())

    def _probe_then_decode(self, recognizer, batch, ticket, max_image_pixels, max_request_pixels, deliver, start):
        """Checks every header; decodes here when the request is light, else hands it to the heavy lane."""
        try:
            ticket.check()
            total = sum(uploads.probe(upload, max_image_pixels) for upload in batch)
            if total > max_request_pixels:
                raise ApiError(413, "too_many_pixels", f"The request's {len(batch)} images have {total} pixels "
                                                       f"together; the limit is {max_request_pixels} per request")
        except Exception as error:  # ApiError, Abandoned, or a bug: it fails this request only
            return deliver(None, error, time.perf_counter() - start)
        if total <= self.light_pixels:
            return self._decode_all(recognizer, batch, ticket, deliver, start)
        try:
            self._heavy.submit(self._decode_all, recognizer, batch, ticket, deliver, start)
        except RuntimeError as error:  # the pool has shut down: the server is stopping
            deliver(None, error, time.perf_counter() - start)

    @staticmethod
    def _decode_all(recognizer, batch, ticket, deliver, start) -> None:
        arrays = []
        try:
            for upload in batch:
                ticket.check()
                arrays.append(uploads.decode(recognizer, upload))
        except Exception as error:
            return deliver(None, error, time.perf_counter() - start)
        deliver(arrays, None, time.perf_counter() - start)
