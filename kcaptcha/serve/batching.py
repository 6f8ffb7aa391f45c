"""`Batcher`: one worker thread per model that reads the uploads arriving together in one model call."""

import asyncio
import queue
import threading
import time
from typing import Dict

import numpy as np

from kcaptcha.serve.uploads import MAX_IMAGE_PIXELS, Upload, decode_upload


class Batcher:
    """A model's worker thread: decodes queued uploads and reads those that arrive together in one call."""

    _STOP = object()

    def __init__(self, recognizer, max_batch_size: int = 64, max_wait_ms: float = 2.0,
                 max_pixels: int = MAX_IMAGE_PIXELS):
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch_size must be >= 1 and max_wait_ms >= 0. "
                             f"Received: max_batch_size={max_batch_size}, max_wait_ms={max_wait_ms}")
        self.recognizer, self.max_batch_size, self.max_pixels = recognizer, max_batch_size, max_pixels
        self.max_wait = max_wait_ms / 1000.0
        self.stats = {"images": 0, "batches": 0, "largest_batch": 0}
        # Trace the model for any batch size now, not on the first concurrent requests.
        recognizer.predict_batch(np.zeros((2, recognizer.height, recognizer.width), np.float32))
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"kcaptcha-{recognizer.name}", daemon=True)
        self._thread.start()

    def submit(self, upload: Upload) -> asyncio.Future:
        """Queues one upload; the future gives `(Prediction, timing)` or raises its `ApiError`."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((upload, future, loop))
        return future

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(self._STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            batch, done = [], []  # (array, future, loop, decode seconds); (future, loop, outcome)
            self._decode(item, batch, done)
            deadline = time.perf_counter() + self.max_wait
            stopping = False
            while len(batch) < self.max_batch_size:
                remaining = deadline - time.perf_counter()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is self._STOP:
                    stopping = True
                    break
                self._decode(item, batch, done)
            if batch:
                self._predict(batch, done)
            self._deliver(done)
            if stopping:
                return

    def _decode(self, item, batch, done) -> None:
        upload, future, loop = item
        start = time.perf_counter()
        try:
            array = decode_upload(self.recognizer, upload, self.max_pixels)
        except Exception as error:  # ApiError, or anything unexpected: it fails this upload only
            done.append((future, loop, error))
            return
        batch.append((array, future, loop, time.perf_counter() - start))

    def _predict(self, batch, done) -> None:
        start = time.perf_counter()
        try:
            predictions = self.recognizer.predict_batch(np.stack([array for array, *_ in batch]))
        except Exception as error:  # a failed model call fails its requests, never the worker
            done.extend((future, loop, error) for _, future, loop, _ in batch)
            return
        model_seconds = time.perf_counter() - start
        self.stats["images"] += len(batch)
        self.stats["batches"] += 1
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
        for (_, future, loop, decode_seconds), prediction in zip(batch, predictions):
            timing = {"decode_ms": decode_seconds * 1000, "model_ms": model_seconds * 1000, "batch_size": len(batch)}
            done.append((future, loop, (prediction, timing)))

    @staticmethod
    def _deliver(done) -> None:
        by_loop: Dict[asyncio.AbstractEventLoop, list] = {}
        for future, loop, outcome in done:
            by_loop.setdefault(loop, []).append((future, outcome))
        for loop, outcomes in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, outcomes)
            except RuntimeError:  # that loop has closed: nobody is waiting any more
                pass


def _resolve(outcomes) -> None:
    for future, outcome in outcomes:
        if future.done():  # the client went away
            continue
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
