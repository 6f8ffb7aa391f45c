"""A pool of rendered captchas kept in memory and renewed in the background: the embedded training data.

Drawing a captcha costs about 1.6 ms of CPU (some 600 a second on 2 cores), as much as a training step
wants. The pool decouples the two: training samples its batches from `size` captchas held in one
TensorFlow variable (pure TensorFlow ops, no Python in the input pipeline), while a background process
keeps drawing new captchas that replace the oldest. Each captcha is seen a few times, each time under
another augmentation.

Captcha `i` of a seed is always the same image, and the pool draws them in order from `start_index`:
`rendered` (the next index) is logged at every validation, so a resumed run continues the stream.
"""

import threading
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from kcaptcha.data import generate
from kcaptcha.reading.vocab import Vocab

RENEW_CHUNK = 32  # captchas per background task
# The share of its time the background process spends drawing: on 2 cores, drawing at full speed took
# half a core from training; at a quarter it still renews the pool several times over in a run.
RENEW_BUSY_FRACTION = 0.25


class CaptchaPool:
    """`size` captchas of `config`'s task in a variable, renewed by a background process.

    Use as a context manager (or call `close()`): the background thread and processes stop at exit.
    """

    def __init__(self, config, size: int, start_index: int = 0, seed: Optional[int] = None, colour: bool = False):
        self.config, self.size, self.colour = config, size, colour
        self.vocab = Vocab.from_config(config)
        if self.vocab.num_classes > 256:
            raise ValueError(f"The captcha pool stores label ids as bytes: at most 255 characters. "
                             f"Received a charset of {len(config.charset)}")
        self.renderer = generate.CaptchaRenderer.from_config(config, seed=seed)
        self.channels = 3 if colour else 1  # RGB for a model that reads colour
        self.pixels = config.height * config.width * self.channels
        self.rendered = start_index
        self.renewed = 0
        self._stop = threading.Event()
        self._thread = None
        # One row per captcha: its pixels, then its label ids, so that one gather reads a consistent pair
        # while the background thread replaces rows.
        initial = self._rows(*generate.render_arrays(self.renderer, size, first=start_index,
                                                     workers=config.data_workers, colour=colour))
        self.rendered += size
        self.variable = tf.Variable(initial, trainable=False, name="captcha_pool")

    def _rows(self, images: np.ndarray, labels) -> np.ndarray:
        ids = self.vocab.encode_many(labels).astype(np.uint8)
        return np.concatenate([images.reshape(len(images), self.pixels), ids], axis=1)

    def start(self) -> "CaptchaPool":
        if self._thread is None:
            self._thread = threading.Thread(target=self._renew, name="kcaptcha-pool", daemon=True)
            self._thread.start()
        return self

    def _renew(self) -> None:
        pool = generate.worker_pool(self.renderer, 1)
        slot = 0
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                task = pool.apply_async(generate.render_chunk, ((self.rendered, RENEW_CHUNK, self.colour),))
                self.rendered += RENEW_CHUNK
                while not task.ready():
                    if self._stop.wait(0.02):
                        return
                busy = time.monotonic() - started
                if self._stop.wait(busy * (1.0 / RENEW_BUSY_FRACTION - 1.0)):
                    return
                rows = self._rows(*task.get())
                end = min(slot + len(rows), self.size)
                self.variable[slot:end].assign(rows[:end - slot])
                self.renewed += end - slot
                slot = end % self.size
        finally:
            pool.terminate()

    def dataset(self, batch_size: int, seed: int = 0) -> tf.data.Dataset:
        """Endless batches of (uint8 images [batch, h, w, 1], or [batch, h, w, 3] in colour, label ids
        [batch, max_length]) from the pool."""
        height, width, size, channels = self.config.height, self.config.width, self.size, self.channels
        variable, pixels = self.variable, self.pixels

        def gather(random):
            rows = tf.gather(variable, tf.math.floormod(random, size))
            images = tf.reshape(rows[:, :pixels], (-1, height, width, channels))
            return images, tf.cast(rows[:, pixels:], tf.int32)

        return tf.data.Dataset.random(seed=seed).batch(batch_size).map(gather, num_parallel_calls=2)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def __enter__(self) -> "CaptchaPool":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
