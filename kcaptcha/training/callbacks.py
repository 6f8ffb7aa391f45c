"""Only the training callbacks Keras lacks: scoring readings, stopping at a target or on a plateau, step and
time limits, keeping the best model safely, and a progress line that counts steps.

Resume and logs use Keras' own callbacks (see `kcaptcha.training.train`); the plateau stop is here because
Keras' `EarlyStopping` watches one metric, and a small validation set needs two.
"""

import math
import sys
import time
import warnings
from typing import Callable, Dict, Optional

import keras
import numpy as np

from kcaptcha import files
from kcaptcha.reading import decoding, metrics


LOSS_EMA = 0.7  # the running average of validation loss: about three validations' worth


class Validation(keras.callbacks.Callback):
    """At every epoch end, reads each labelled set and adds its scores (`kcaptcha.reading.metrics`) to the logs.

    Keras' compiled metrics compare label ids position by position, which cannot score a CTC reading and
    would differ from `bin/evaluate`; this decodes the logits exactly as a `Recognizer` does instead.

    Under a multi-worker strategy each worker reads its share of every set (image i on worker i mod n) and
    the workers add up their tallies, so every worker logs the same scores and the early stop, the target
    stop and the best model agree everywhere.

    Args:
        sets: {log prefix: `LabelledImages`}, e.g. {"val_": validation set, "": a sample of training images}.
        output: the architecture's output kind (see `kcaptcha.reading.decoding`).
        vocab: the model's `Vocab`.
        clock_offset: training seconds before this run (a resumed run continues its clock).
        extra: returns more {name: number} to log (e.g. how many captchas the pool has drawn).
        workers: the run's `kcaptcha.training.distribute.Workers` (None: one worker).

    Each set also logs its mean loss (`<prefix>loss`, the model's own loss on the logits it read), and its
    running average over validations (`<prefix>loss_ema`, momentum `LOSS_EMA`): the smooth signal
    `PlateauStop` watches where a small validation set's accuracy moves in steps of whole images.
    """

    def __init__(self, sets: Dict[str, object], output: str, vocab, clock_offset: float = 0.0,
                 extra: Optional[Callable[[], dict]] = None, workers=None):
        super().__init__()
        self.sets, self.output, self.vocab, self.clock_offset = sets, output, vocab, clock_offset
        self.extra, self.workers = extra, workers
        self.latest, self.loss_ema = {}, {}

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        count, index = (self.workers.count, self.workers.index) if self.workers else (1, 0)
        for prefix, labelled in self.sets.items():
            if count == 1:
                logits = self.model.predict(labelled.images, batch_size=256, verbose=0)
                truths = labelled.labels
            else:  # this worker's share, read without the strategy (Keras' predict would spread it again)
                logits, truths = self._local_logits(labelled.images, count, index), labelled.labels[index::count]
            readings = [p.text for p in decoding.decode(logits, self.output, self.vocab)]
            tallies = [*metrics.tallies(truths, readings), self._loss_sum(truths, logits)]
            if count > 1:
                tallies = self.workers.sum(tallies)
            for key, value in metrics.scores_from_tallies(tallies[:4]).items():
                logs[prefix + key] = value
            if tallies[0] and not math.isnan(tallies[4]):
                loss = float(tallies[4]) / float(tallies[0])
                ema = self.loss_ema.get(prefix)
                self.loss_ema[prefix] = loss if ema is None else LOSS_EMA * ema + (1 - LOSS_EMA) * loss
                logs[prefix + "loss"], logs[prefix + "loss_ema"] = loss, self.loss_ema[prefix]
        logs["step"] = step_of(self.model)
        logs["wall_seconds"] = round(self.clock_offset + time.monotonic() - self.started, 2)
        logs.update(self.extra() if self.extra else {})
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.latest = {key: value for key, value in logs.items() if key.startswith("val_")}

    def _loss_sum(self, truths, logits) -> float:
        """The model's loss summed over these images (NaN where it has none, or a label it cannot hold)."""
        loss = getattr(self.model, "loss", None)
        if not callable(loss) or not len(truths):
            return math.nan
        try:
            ids = self.vocab.encode_many(truths)
        except ValueError:
            return math.nan
        mean = float(keras.ops.convert_to_numpy(loss(ids, np.asarray(logits, dtype=np.float32))))
        return mean * len(truths)

    def _local_logits(self, images, count: int, index: int, batch_size: int = 256) -> np.ndarray:
        if not isinstance(images, np.ndarray):  # a batched dataset of decoded files
            images = np.concatenate([batch for batch in images.as_numpy_iterator()])
        images = images[index::count]
        return np.concatenate([keras.ops.convert_to_numpy(self.model(images[i:i + batch_size], training=False))
                               for i in range(0, len(images), batch_size)] or [np.zeros((0,))])


def step_of(model) -> int:
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class AtomicModelCheckpoint(keras.callbacks.Callback):
    """Keeps the best model at `filepath`: at each epoch end where `monitor` is at least as good as the best so
    far, the whole model is written to a temporary file beside it and renamed over it (`files.atomic_path`).

    Keras' `ModelCheckpoint` does neither. It writes the .keras zip in place, so a kill during the write would
    leave a corrupt best model. And it keeps the first of equal scores: a small validation set (20 images of a
    200-image folder) reads 1.0 from step 100-200 on, when the model is barely trained; fine-tuned on 200
    captcha_images_v2 labels per fold, keeping the later model cut misreads from 26 of 1040 to 9-10
    (CHANGELOG.md, 2026-12-01). Among models that score alike, the one trained longer.

    Args:
        filepath: the model file (a name ending in `.keras`).
        monitor: the logged value compared (`Validation`'s `val_image_accuracy` in training).
        mode: "max" when higher is better, "min" when lower is.
        save_best_only: False saves at every epoch end (the best value is still tracked).
        initial_value_threshold: the best value so far, as a resumed run knows it from its history: only a
            model at least as good replaces the one kept.
    """

    def __init__(self, filepath: str, monitor: str = "val_image_accuracy", mode: str = "max",
                 save_best_only: bool = True, initial_value_threshold: Optional[float] = None):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min'. Received: mode={mode!r}")
        self.filepath, self.monitor, self.mode, self.save_best_only = filepath, monitor, mode, save_best_only
        self.best = None if initial_value_threshold is None else float(initial_value_threshold)

    def at_least_as_good(self, value: float) -> bool:
        if self.best is None:
            return not np.isnan(value)
        return value >= self.best if self.mode == "max" else value <= self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            warnings.warn(f"AtomicModelCheckpoint: {self.monitor!r} is not in the logs of epoch {epoch} "
                          f"(they hold {', '.join(sorted(logs)) or 'nothing'}); the model was not saved.")
            return
        value = float(logs[self.monitor])
        better = self.at_least_as_good(value)
        if better:
            self.best = value
        if better or not self.save_best_only:
            with files.atomic_path(self.filepath) as tmp:
                self.model.save(tmp)


class TargetAccuracyStop(keras.callbacks.Callback):
    """Stops training once a validation metric reaches `target` (whole-image accuracy by default), from
    optimizer step `min_step` on."""

    def __init__(self, target: float, monitor: str = "val_image_accuracy", min_step: int = 0):
        super().__init__()
        self.target, self.monitor, self.min_step = target, monitor, min_step
        self.reached = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value >= self.target and step_of(self.model) >= self.min_step:
            self.reached = float(value)
            self.model.stop_training = True


class PlateauStop(keras.callbacks.Callback):
    """Stops training when validation has stopped improving: neither a better whole-image accuracy nor a
    running-average loss (`val_loss_ema`) lower than its best by `min_relative_delta`, for `patience`
    validations in a row, from optimizer step `min_step` on. `reached` then says so in words.

    Accuracy alone cannot tell a plateau on a small validation set (20 images move it in steps of 5%, and it
    sits at 100% long before the model stops improving); the loss's running average can.
    """

    def __init__(self, patience: int, min_step: int = 0, min_relative_delta: float = 0.01,
                 accuracy: str = "val_image_accuracy", loss: str = "val_loss_ema"):
        super().__init__()
        self.patience, self.min_step, self.min_relative_delta = patience, min_step, min_relative_delta
        self.accuracy, self.loss = accuracy, loss
        self.best_accuracy, self.best_loss, self.wait = -math.inf, math.inf, 0
        self.reached = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        accuracy, loss = logs.get(self.accuracy), logs.get(self.loss)
        improved = False
        if accuracy is not None and accuracy > self.best_accuracy:
            self.best_accuracy, improved = accuracy, True
        if loss is not None and loss < self.best_loss * (1 - self.min_relative_delta):
            self.best_loss, improved = loss, True
        self.wait = 0 if improved else self.wait + 1
        step = step_of(self.model)
        if self.wait >= self.patience and step >= self.min_step:
            self.reached = (f"no better validation accuracy or loss for {self.wait} validations "
                            f"(best accuracy {self.best_accuracy:.4f}, loss {self.best_loss:.4f})")
            self.model.stop_training = True


class StepLimit(keras.callbacks.Callback):
    """Stops after optimizer step `max_steps`, wherever that falls in an epoch.

    Needed because a run resumed from a mid-epoch backup restarts that epoch, so epochs and steps drift
    apart; Keras still validates the shortened epoch before it stops.
    """

    def __init__(self, max_steps: int):
        super().__init__()
        self.max_steps = max_steps
        self.reached = False

    def on_train_batch_end(self, batch, logs=None):
        if step_of(self.model) >= self.max_steps:
            self.reached = True
            self.model.stop_training = True


class TimeLimit(keras.callbacks.Callback):
    """Stops training after `seconds` of wall time in this run (checked after every batch).

    Under several workers, whose clocks differ, the slowest clock decides (`agree`, an all-gather), checked
    every `every` batches so that the workers stop at the same step at the cost of one small collective.
    """

    def __init__(self, seconds: float, agree: Optional[Callable[[float], float]] = None, every: int = 1):
        super().__init__()
        self.seconds, self.agree, self.every = seconds, agree, every
        self.reached = False

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if batch % self.every:
            return
        elapsed = time.monotonic() - self.started
        if (self.agree(elapsed) if self.agree else elapsed) >= self.seconds:
            self.reached = True
            self.model.stop_training = True


class Progress(keras.callbacks.Callback):
    """Shows step/max_steps, steps per second, time left (at most: a plateau may end it sooner) and the
    latest validation accuracy and loss.

    On a terminal one line is redrawn about once a second; otherwise (a log file) a complete line is
    written at every validation, so logs stay readable.
    """

    def __init__(self, max_steps: int, stream=None, interval: float = 1.0):
        super().__init__()
        self.max_steps, self.interval = max_steps, interval
        self.stream = stream or sys.stderr
        self.live = getattr(self.stream, "isatty", lambda: False)()
        self.latest = {}

    def on_train_begin(self, logs=None):
        self.start_step = step_of(self.model)
        self.started = self.shown = time.monotonic()
        self.first_step = None

    def on_train_batch_end(self, batch, logs=None):
        if self.first_step is None:
            # The rate (and so the ETA) counts from the end of the first step: building the training step
            # takes as long as dozens of steps, and counting it made the first ETA half as long again.
            self.first_step = (step_of(self.model), time.monotonic())
            self.stream.write(("\r" if self.live else "") + f"step {self.first_step[0]}/{self.max_steps}  "
                              f"training (the first step took {self.first_step[1] - self.started:.0f} s: building "
                              "the training step)" + ("\033[K" if self.live else "\n"))
            self.stream.flush()
            self.shown = time.monotonic()
        if self.live and time.monotonic() - self.shown >= self.interval:
            self.shown = time.monotonic()
            self.stream.write("\r" + self.line() + "\033[K")
            self.stream.flush()

    def on_epoch_end(self, epoch, logs=None):
        self.latest = dict(logs or {})
        self.stream.write(("\r" if self.live else "") + self.line() + ("\033[K" if self.live else "") + "\n")
        self.stream.flush()

    def line(self) -> str:
        step = step_of(self.model)
        first_step, first_time = self.first_step or (self.start_step, self.started)
        seconds = time.monotonic() - first_time
        rate = (step - first_step) / seconds if seconds > 0 and step > first_step else 0.0
        left = (self.max_steps - step) / rate if rate > 0 else None
        parts = [f"step {step}/{self.max_steps}", f"{rate:.1f} steps/s", f"ETA {duration(left)}"]
        if "val_image_accuracy" in self.latest:
            parts.append(f"val_image_accuracy {self.latest['val_image_accuracy']:.4f} "
                         f"(step {self.latest.get('step', '?')})")
        if "val_loss_ema" in self.latest:  # what the plateau stop watches
            parts.append(f"val_loss (average) {self.latest['val_loss_ema']:.4f}")
        if "loss" in self.latest:
            parts.append(f"loss {self.latest['loss']:.4f}")
        return "  ".join(parts)


def duration(seconds) -> str:
    """`1h02m` or `3m07s`; `?` for None."""
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
