"""`RecognitionService`: the served models, each with its `Batcher`, the per-image limit, and saving uploads."""

import asyncio
import concurrent.futures
import logging
import os
import time
from typing import Mapping, Optional, Sequence, Tuple

from kcaptcha.serve.batching import Batcher
from kcaptcha.serve.uploads import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, ApiError, Upload, save_upload

logger = logging.getLogger("kcaptcha.serve")


class RecognitionService:
    """Reads uploads with the named model, batching them with other requests'; the first model is the default.

    Args:
        recognizers: {name: Recognizer}, in the order they are listed.
        save_uploads: a folder; every upload read is saved as `<folder>/<model>/<prediction>_<time>.<ext>`.
        max_batch_size, max_wait_ms, max_pixels: passed to each model's `Batcher`.
        max_image_bytes: the most bytes in one image; a larger one is answered 413.
    """

    def __init__(self, recognizers: Mapping[str, object], save_uploads: Optional[str] = None,
                 max_batch_size: int = 64, max_wait_ms: float = 2.0, max_image_bytes: int = MAX_IMAGE_BYTES,
                 max_pixels: int = MAX_IMAGE_PIXELS):
        self.recognizers, self.names = recognizers, list(recognizers)
        self.save_uploads, self.max_image_bytes = save_uploads, max_image_bytes
        self.batchers = {name: Batcher(recognizer, max_batch_size, max_wait_ms, max_pixels)
                         for name, recognizer in recognizers.items()}
        self._savers = (concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kcaptcha-save")
                        if save_uploads else None)

    def close(self) -> None:
        """Stops the batching threads, then waits for the uploads still being saved."""
        for batcher in self.batchers.values():
            batcher.close()
        if self._savers:
            self._savers.shutdown(wait=True)

    def model_name(self, name: str) -> str:
        """`name` if it is served; `ApiError(404)` otherwise."""
        if name not in self.batchers:
            raise ApiError(404, "unknown_model", f"No model named {name!r}. Served: {', '.join(self.names)}")
        return name

    async def recognize(self, name: str, uploads: Sequence[Upload]) -> Tuple[list, dict, str]:
        """The predictions for `uploads`, in order, their timing (ms, batch size) and a microsecond timestamp."""
        for upload in uploads:
            if len(upload.data) > self.max_image_bytes:
                raise ApiError(413, "too_large", f"{upload.label} is {len(upload.data)} bytes; the limit is "
                                                 f"{self.max_image_bytes} bytes per image")
        submit = self.batchers[name].submit
        if len(uploads) == 1:
            results = [await submit(uploads[0])]
        else:
            results = await asyncio.gather(*(submit(upload) for upload in uploads))
        predictions = [prediction for prediction, _ in results]
        timing = {"decode": sum(t["decode_ms"] for _, t in results), "model": max(t["model_ms"] for _, t in results),
                  "batch_size": max(t["batch_size"] for _, t in results)}
        timestamp = str(time.time_ns() // 1000)
        if self._savers:  # in the background: the answer does not wait for the disk
            self._savers.submit(self._save, name, uploads, predictions, timestamp)
        return predictions, timing, timestamp

    def _save(self, name: str, uploads: Sequence[Upload], predictions, timestamp: str) -> None:
        folder = os.path.join(self.save_uploads, name)
        for upload, prediction in zip(uploads, predictions):
            try:
                save_upload(folder, prediction.text, upload, timestamp)
            except Exception:  # a full disk must not stop recognition: say so in the log
                logger.exception("Could not save an upload to %s", folder)
