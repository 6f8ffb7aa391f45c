"""`RecognitionService`: the served models, each with its bounded queue and `Batcher`, a shared `DecodePool`,
and saving answered uploads.

The served set can change while it serves (`model_folder`): `install` puts a loaded model in place in one
step on the event loop, and the model it replaces is closed once the requests already on it are answered.
"""

import asyncio
import logging
import threading
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from kcaptcha.serve.admission import BUSY_HEADERS
from kcaptcha.serve.batching import Batcher, fail
from kcaptcha.serve.decoders import Abandoned, DecodePool, Ticket
from kcaptcha.serve.limits import Limits
from kcaptcha.serve.uploads import ApiError, Upload, UploadSaver, probe

logger = logging.getLogger("kcaptcha.serve")


def check_model_name(name: str) -> str:
    """`name` if it can name a served model (non-empty, fits in a URL path); `ValueError` otherwise."""
    if not name or any(c in name for c in "/?#%\\ "):
        raise ValueError(f"A model name must be non-empty and fit in a URL path. Received: {name!r}")
    return name


class ServedModel:
    """One loaded model as served: its recognizer, its batching worker, and its images admitted and not yet
    answered; `model_dir` and `loaded_at` say which version it is."""

    def __init__(self, recognizer, batcher: Batcher):
        self.recognizer, self.batcher, self.queued, self.retired = recognizer, batcher, 0, False
        self.model_dir, self.loaded_at = getattr(recognizer, "model_dir", None), time.time()


class RecognitionService:
    """Reads uploads with the named model, batching them with other requests'.

    The models given here are served first, in their order; models installed later follow, by name. The
    first served model is the default.

    Args:
        recognizers: {name: Recognizer}, in the order they are listed (may be empty when a model folder
            fills the service).
        limits: the service's `Limits` (per-image bytes and pixels, the request pixel budget, the queue bound).
        metrics: the app's `Metrics`.
        max_batch_size, max_wait_ms: passed to each model's `Batcher`.
        saver: where answered uploads are saved, or None.
    """

    def __init__(self, recognizers: Mapping[str, object], limits: Limits, metrics, max_batch_size: int = 64,
                 max_wait_ms: float = 2.0, saver: Optional[UploadSaver] = None):
        self.limits, self.metrics, self.saver, self.closed = limits, metrics, saver, False
        self.max_batch_size, self.max_wait_ms = max_batch_size, max_wait_ms
        self.models: Dict[str, ServedModel] = {}
        self._fixed = list(recognizers)  # served first, in this order; the others follow by name
        self._gauged = set()
        self.decoders = DecodePool()
        for name, recognizer in recognizers.items():
            self.install(name, self.prepare(name, recognizer))

    @property
    def names(self) -> List[str]:
        """The served models' names, the default first."""
        return [name for name in self._fixed if name in self.models] + \
            sorted(name for name in self.models if name not in self._fixed)

    @property
    def recognizers(self) -> Dict[str, object]:
        return {name: self.models[name].recognizer for name in self.names}

    @property
    def batchers(self) -> Dict[str, Batcher]:
        return {name: self.models[name].batcher for name in self.names}

    def prepare(self, name: str, recognizer) -> ServedModel:
        """`recognizer` with its batching worker started (and its model traced): ready to `install`."""
        return ServedModel(recognizer, Batcher(recognizer, self.max_batch_size, self.max_wait_ms,
                                               self.metrics.batch_observer(name)))

    def install(self, name: str, model: ServedModel) -> None:
        """Serves `model` as `name` from the next request on, in place of the model served as `name` (on the
        event loop, or before it runs)."""
        old, self.models[name] = self.models.get(name), model
        if name not in self._gauged:  # read when scraped: no cost per request
            self._gauged.add(name)
            self.metrics.queue_depth.labels(name).set_function(
                lambda name=name: self.models[name].queued if name in self.models else 0)
        if old is not None:
            self._retire(old)

    def remove(self, name: str) -> None:
        """Stops serving `name`; requests already on it are answered (on the event loop)."""
        old = self.models.pop(name, None)
        if old is not None:
            self._retire(old)

    def _retire(self, model: ServedModel) -> None:
        model.retired = True
        if not model.queued:
            _close_later(model)

    def close(self) -> None:
        """Stops taking work, then stops the decoding and batching threads."""
        self.closed = True
        self.decoders.close()
        for model in self.models.values():
            model.batcher.close()

    def model_name(self, name: str) -> str:
        """`name` if it is served; `ApiError(404)` otherwise."""
        if name not in self.models:
            raise ApiError(404, "unknown_model", f"No model named {name!r}. Served: {', '.join(self.names)}")
        return name

    def default_name(self) -> str:
        """The first served model; `ApiError(503)` while none is."""
        names = self.names
        if not names:
            raise ApiError(503, "no_model", "No model is served yet; retry shortly", BUSY_HEADERS)
        return names[0]

    def model_for(self, upload: Upload) -> str:
        """The model for an image whose request names none: the served model whose input size is the image's
        size (of several, the first served); the default when none is.

        The image's header is read only when the served models' sizes differ.
        """
        names = self.names
        default = self.default_name()
        if len({(self.models[name].recognizer.width, self.models[name].recognizer.height) for name in names}) == 1:
            return default
        probe(upload, self.limits.max_image_pixels)  # a bad image gets the error it would get anyway
        return next((name for name in names if upload.size == (self.models[name].recognizer.width,
                                                                self.models[name].recognizer.height)), default)

    def readiness(self) -> Tuple[bool, dict]:
        """(ready, report): ready while a model is served, every worker runs and every queue is below its bound."""
        reasons = ["shutting down"] if self.closed else []
        if not self.models:
            reasons.append("no model is served yet")
        models = {}
        for name in self.names:
            model = self.models[name]
            if not model.batcher.alive:
                reasons.append(f"{name}: its batching worker has stopped")
            if model.queued >= self.limits.max_queue:
                reasons.append(f"{name}: its queue is full ({model.queued} images)")
            models[name] = {"worker_alive": model.batcher.alive, "queued": model.queued,
                            "max_queue": self.limits.max_queue, **model.batcher.stats}
        return not reasons, {"status": "not_ready" if reasons else "ready", "reasons": reasons, "models": models}

    async def recognize(self, name: str, uploads: Sequence[Upload], ticket: Ticket) -> Tuple[list, dict]:
        """The predictions for `uploads`, in order, and their timing (ms, batch size).

        Raises:
            ApiError: 413 for an image over the byte or pixel limits, 503 while the model's queue is full,
                404 when the model stopped being served since `model_name`, the first bad image's error
                otherwise.
            decoders.Abandoned: `ticket` was abandoned while the work waited.
        """
        for upload in uploads:
            if len(upload.data) > self.limits.max_image_bytes:
                raise ApiError(413, "too_large", f"{upload.label} is {len(upload.data)} bytes; the limit is "
                                                 f"{self.limits.max_image_bytes} bytes per image")
        if self.closed:
            self.metrics.rejected.labels("shutting_down").inc()
            raise ApiError(503, "shutting_down", "The server is shutting down; retry shortly", BUSY_HEADERS)
        model = self.models.get(name)  # this request stays on this version of the model, even if replaced
        if model is None:
            raise ApiError(404, "unknown_model", f"Model {name!r} is not served any more. Served: "
                                                 f"{', '.join(self.names)}")
        if model.queued and model.queued + len(uploads) > self.limits.max_queue:  # a large batch fits an empty queue
            self.metrics.rejected.labels("queue_full").inc()
            raise ApiError(503, "queue_full", f"{model.queued} images wait for model {name!r}, the most it "
                                              "queues; retry shortly", BUSY_HEADERS)
        model.queued += len(uploads)
        loop, batcher, decoding = asyncio.get_running_loop(), model.batcher, {}
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
            self.decoders.submit(model.recognizer, uploads, ticket, self.limits.max_image_pixels,
                                 self.limits.max_request_pixels, deliver)
            results = await asyncio.gather(*futures)
        finally:
            model.queued -= len(uploads)
            if model.retired and not model.queued:  # replaced or removed, and its last request is answered
                _close_later(model)
        timing = {"decode": decoding["ms"], "model": max(t["model_ms"] for _, t in results),
                  "batch_size": max(t["batch_size"] for _, t in results)}
        return [prediction for prediction, _ in results], timing

    def save(self, name: str, uploads: Sequence[Upload], predictions, timestamp: str) -> None:
        """Saves the uploads of an answered request (a no-op without `saver`); runs after the answer is sent."""
        model = self.models.get(name)
        if self.saver and model is not None:  # a model removed since the answer: its uploads are not kept
            self.saver.save(name, model.recognizer, uploads, predictions, timestamp)


def _close_later(model: ServedModel) -> None:
    """Stops a retired model's batching worker in a thread of its own (closing waits for the worker)."""
    threading.Thread(target=model.batcher.close, name="kcaptcha-retire", daemon=True).start()
