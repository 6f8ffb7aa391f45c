"""Training callbacks: stop at a target accuracy, atomic periodic checkpoints, the best model, curves."""

import csv
import glob
import json
import os
import re
import time

import keras

CHECKPOINT_PATTERN = re.compile(r"ckpt-(\d+)\.keras$")


def atomic_save_model(model: keras.Model, path: str) -> None:
    """Writes `path` so that a crash at any moment leaves either the old file or the new one."""
    tmp = f"{path}.tmp-{os.getpid()}.keras"
    model.save(tmp)
    os.replace(tmp, path)


def atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def list_checkpoints(checkpoint_dir: str):
    """(step, path) of every complete checkpoint, oldest first."""
    found = []
    for path in glob.glob(os.path.join(checkpoint_dir, "ckpt-*.keras")):
        match = CHECKPOINT_PATTERN.search(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


class TargetAccuracyStop(keras.callbacks.Callback):
    """Stops training once a validation metric reaches `target` (whole-image accuracy by default)."""

    def __init__(self, target: float, monitor: str = "val_image_accuracy"):
        super().__init__()
        self.target = target
        self.monitor = monitor
        self.reached = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value >= self.target:
            self.reached = float(value)
            self.model.stop_training = True
            print(f"\n{self.monitor} = {value:.4f} reached the target {self.target}; stopping.")


class TimeLimit(keras.callbacks.Callback):
    """Stops training after `seconds` of wall time (checked after every batch)."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.reached = False

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self.started >= self.seconds:
            self.reached = True
            self.model.stop_training = True


class PeriodicCheckpoint(keras.callbacks.Callback):
    """Every `every_steps` optimizer steps, saves the whole model (weights + optimizer) atomically."""

    def __init__(self, checkpoint_dir: str, every_steps: int, keep: int):
        super().__init__()
        self.checkpoint_dir = checkpoint_dir
        self.every_steps = every_steps
        self.keep = keep
        os.makedirs(checkpoint_dir, exist_ok=True)

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if step % self.every_steps == 0:
            self.save(step)

    def on_train_end(self, logs=None):
        self.save(self._step())

    def save(self, step: int) -> None:
        path = os.path.join(self.checkpoint_dir, f"ckpt-{step}.keras")
        if os.path.exists(path):
            return
        atomic_save_model(self.model, path)
        for _, old in list_checkpoints(self.checkpoint_dir)[:-self.keep]:
            os.remove(old)


class BestModel(keras.callbacks.Callback):
    """Keeps the model with the best validation metric (and its logs) at `path`."""

    def __init__(self, path: str, monitor: str = "val_image_accuracy", best: float = -1.0):
        super().__init__()
        self.path = path
        self.monitor = monitor
        self.best = best
        self.best_logs = {}

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best:
            self.best = float(value)
            self.best_logs = {k: float(v) for k, v in logs.items()}
            self.best_logs["step"] = int(self.model.optimizer.iterations.numpy())
            atomic_save_model(self.model, self.path)
            atomic_write_text(self.path + ".json", json.dumps(self.best_logs, indent=2))


class StepLogger(keras.callbacks.Callback):
    """Adds the optimizer step and learning rate to each epoch's logs (read by the CSV log and plots)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["step"] = int(self.model.optimizer.iterations.numpy())
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def plot_learning_curves(csv_path: str, png_path: str) -> bool:
    """Draws loss and whole-image accuracy against steps from the CSV log; False if nothing to draw."""
    if not os.path.exists(csv_path):
        return False
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [float(r.get("step") or i) for i, r in enumerate(rows)]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for key, axis in (("loss", loss_axis), ("image_accuracy", accuracy_axis)):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [r.get(prefix + key) for r in rows]
            if all(v not in (None, "") for v in values):
                axis.plot(steps, [float(v) for v in values], style, label=(prefix or "train_") + key)
        axis.set_xlabel("step")
        axis.set_title(key)
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(png_path, dpi=80)
    plt.close(figure)
    return True
