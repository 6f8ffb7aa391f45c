"""`Batcher`: one worker thread per model that reads the images arriving together in one model call.

Images reach it decoded (`decoders.DecodePool`), so the model's thread only runs the model. An image whose
request was abandoned while it waited is dropped before the call.
"""

import asyncio
import queue
import threading
import time
from typing import Callable, Dict, Optional

import numpy as np


class Batcher:
    """A model's worker thread: reads the queued model inputs that arrive together in one call.

    Args:
        on_batch: called from the worker thread with (batch size, model seconds) after each model call.
    """

    _STOP = object()

    def __init__(self, recognizer, max_batch_size: int = 64, max_wait_ms: float = 2.0,
                 on_batch: Optional[Callable[[int, float], None]] = None):
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch_size must be >= 1 and max_wait_ms >= 0. "
                             f"Received: max_batch_size={max_batch_size}, max_wait_ms={max_wait_ms}")
        self.recognizer, self.max_batch_size, self.on_batch = recognizer, max_batch_size, on_batch
        self.max_wait = max_wait_ms / 1000.0
        self.stats = {"images": 0, "batches": 0, "largest_batch": 0, "dropped": 0}
        self._dropped_lock = threading.Lock()  # `drop` is called from the decoding threads too
        # Trace the model for any batch size now, not on the first concurrent requests.
        recognizer.predict_batch(np.zeros((2, recognizer.height, recognizer.width), np.float32))
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"kcaptcha-{recognizer.name}", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, array: np.ndarray, ticket) -> asyncio.Future:
        """Queues one model input; the future gives `(Prediction, timing)` or raises the model's error.

        Args:
            ticket: the request's `decoders.Ticket`; once abandoned, the input is dropped unread.
        """
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.put(array, ticket, future, loop)
        return future

    def put(self, array: np.ndarray, ticket, future: asyncio.Future, loop: asyncio.AbstractEventLoop) -> None:
        """Queues one model input whose `future` (of `loop`) gets the outcome; callable from any thread."""
        self._queue.put((array, ticket, future, loop))

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(self._STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is self._STOP:
                return
            batch = [item] if self._live(item) else []
            deadline = time.perf_counter() + self.max_wait
            while batch and len(batch) < self.max_batch_size:
                remaining = deadline - time.perf_counter()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is self._STOP:
                    stopping = True
                    break
                if self._live(item):
                    batch.append(item)
            if batch:
                _deliver(self._predict(batch))

    def drop(self, count: int = 1) -> None:
        """Counts `count` inputs of abandoned requests as dropped unread, here or before they were decoded."""
        with self._dropped_lock:
            self.stats["dropped"] += count

    def _live(self, item) -> bool:
        """False (and counted as dropped) for an input whose request has been abandoned."""
        if item[1].abandoned:
            self.drop()
            return False
        return True

    def _predict(self, batch):
        """[(future, loop, outcome)] for one model call on `batch`; a failed call fails its requests only."""
        start = time.perf_counter()
        try:
            charsets = [ticket.charset for _, ticket, _, _ in batch]  # each request's own, in one model call
            predictions = self.recognizer.predict_batch(np.stack([array for array, *_ in batch]), charsets)
        except Exception as error:
            return [(future, loop, error) for _, _, future, loop in batch]
        model_seconds = time.perf_counter() - start
        self.stats["images"] += len(batch)
        self.stats["batches"] += 1
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
        if self.on_batch:
            self.on_batch(len(batch), model_seconds)
        timing = {"model_ms": model_seconds * 1000, "batch_size": len(batch)}
        return [(future, loop, (prediction, timing)) for (_, _, future, loop), prediction in zip(batch, predictions)]


def fail(futures, error: Exception) -> None:
    """Sets `error` on those of `futures` still waiting; callable from any thread (they share one loop)."""
    if futures:
        _deliver([(future, futures[0].get_loop(), error) for future in futures])


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
        if future.done():  # the request was given up
            continue
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
