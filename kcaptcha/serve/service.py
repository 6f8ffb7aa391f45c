"""`RecognitionService`: the served models, each with its bounded queue and `Batcher`, a shared `DecodePool`,
and saving answered uploads."""

import asyncio
from typing import Mapping, Optional, Sequence, Tuple

from kcaptcha.serve.admission import BUSY_HEADERS
from kcaptcha.serve.batching import Batcher, fail
from kcaptcha.serve.decoders import Abandoned, DecodePool, Ticket
from kcaptcha.serve.limits import Limits
from kcaptcha.serve.uploads import ApiError, Upload, UploadSaver, probe


class RecognitionService:
    """Reads uploads with the named model, batching them with other requests'; the first model is the default.

    Args:
        recognizers: {name: Recognizer}, in the order they are listed.
        limits: the service's `Limits` (per-image bytes and pixels, the request pixel budget, the queue bound).
        metrics: the app's `Metrics`.
        max_batch_size, max_wait_ms: passed to each model's `Batcher`.
        saver: where answered uploads are saved, or None.
    """

    def __init__(self, recognizers: Mapping[str, object], limits: Limits, metrics, max_batch_size: int = 64,
                 max_wait_ms: float = 2.0, saver: Optional[UploadSaver] = None):
        self.recognizers, self.names, self.limits, self.metrics = recognizers, list(recognizers), limits, metrics
        self.saver, self.closed = saver, False
        self.batchers = {name: Batcher(recognizer, max_batch_size, max_wait_ms, metrics.batch_observer(name))
                         for name, recognizer in recognizers.items()}
        self.decoders = DecodePool()
        self.queued = dict.fromkeys(self.names, 0)  # images admitted and not yet answered, per model
        for name in self.names:  # read when scraped: no cost per request
            metrics.queue_depth.labels(name).set_function(lambda name=name: self.queued[name])

    def close(self) -> None:
        """Stops taking work, then stops the decoding and batching threads."""
        self.closed = True
        self.decoders.close()
        for batcher in self.batchers.values():
            batcher.close()

    def model_name(self, name: str) -> str:
        """`name` if it is served; `ApiError(404)` otherwise."""
        if name not in self.batchers:
            raise ApiError(404, "unknown_model", f"No model named {name!r}. Served: {', '.join(self.names)}")
        return name

    def readiness(self) -> Tuple[bool, dict]:
        """(ready, report): ready while every worker runs and every queue is below its bound."""
        reasons = ["shutting down"] if self.closed else []
        models = {}
        for name, batcher in self.batchers.items():
            if not batcher.alive:
                reasons.append(f"{name}: its batching worker has stopped")
            if self.queued[name] >= self.limits.max_queue:
                reasons.append(f"{name}: its queue is full ({self.queued[name]} images)")
            models[name] = {"worker_alive": batcher.alive, "queued": self.queued[name],
                            "max_queue": self.limits.max_queue, **batcher.stats}
        return not reasons, {"status": "not_ready" if reasons else "ready", "reasons": reasons, "models": models}

    async def recognize(self, name: str, uploads: Sequence[Upload], ticket: Ticket) -> Tuple[list, dict]:
        """The predictions for `uploads`, in order, and their timing (ms, batch size).

        Raises:
            ApiError: 413 for an image over the byte or pixel limits, 503 while the model's queue is full,
                the first bad image's error otherwise.
            decoders.Abandoned: `ticket` was abandoned while the work waited.
        """
        for upload in uploads:
            if len(upload.data) > self.limits.max_image_bytes:
                raise ApiError(413, "too_large", f"{upload.label} is {len(upload.data)} bytes; the limit is "
                                                 f"{self.limits.max_image_bytes} bytes per image")
        await self._check_pixels(uploads)  # before the request takes a queue slot or a decoder
        if self.closed:
            self.metrics.rejected.labels("shutting_down").inc()
            raise ApiError(503, "shutting_down", "The server is shutting down; retry shortly", BUSY_HEADERS)
        if self.queued[name] and self.queued[name] + len(uploads) > self.limits.max_queue:  # a large batch fits an empty queue
            self.metrics.rejected.labels("queue_full").inc()
            raise ApiError(503, "queue_full", f"{self.queued[name]} images wait for model {name!r}, the most it "
                                              "queues; retry shortly", BUSY_HEADERS)
        self._count(name, len(uploads))
        loop, batcher, decoding = asyncio.get_running_loop(), self.batchers[name], {}
        futures = [loop.create_future() for _ in uploads]

        def deliver(arrays, error, seconds):  # in a decoding thread: the inputs go straight to the model
            decoding["ms"] = seconds * 1000
            if error is not None:
                if isinstance(error, Abandoned):  # given up before its images reached the model's queue
                    batcher.drop(len(futures))
                return fail(futures, error)
            self.metrics.decode_seconds.labels(name).observe(seconds)
            for array, future in zip(arrays, futures):
                batcher.put(array, ticket, future, loop)

        try:
            self.decoders.submit(self.recognizers[name], uploads, ticket, self.limits.max_image_pixels,
                                 self.limits.max_request_pixels, deliver)
            results = await asyncio.gather(*futures)
        finally:
            self._count(name, -len(uploads))
        timing = {"decode": decoding["ms"], "model": max(t["model_ms"] for _, t in results),
                  "batch_size": max(t["batch_size"] for _, t in results)}
        return [prediction for prediction, _ in results], timing

    async def _check_pixels(self, uploads: Sequence[Upload]) -> None:
        """Reads every image's header (multipart files were read as they arrived) and checks the pixel budgets;
        in a thread when there are several to read."""
        unread = [upload for upload in uploads if upload.image is None]
        if len(unread) > 1:
            await asyncio.to_thread(self._pixels, uploads)
        else:
            self._pixels(uploads)

    def _pixels(self, uploads: Sequence[Upload]) -> None:
        total = sum(probe(upload, self.limits.max_image_pixels) for upload in uploads)
        if total > self.limits.max_request_pixels:
            raise ApiError(413, "too_many_pixels", f"The request's {len(uploads)} images have {total} pixels "
                                                   f"together; the limit is {self.limits.max_request_pixels} per "
                                                   "request")

    def save(self, name: str, uploads: Sequence[Upload], predictions, timestamp: str) -> None:
        """Saves the uploads of an answered request (a no-op without `saver`); runs after the answer is sent."""
        if self.saver:
            self.saver.save(name, self.recognizers[name], uploads, predictions, timestamp)

    def _count(self, name: str, change: int) -> None:
        self.queued[name] += change
