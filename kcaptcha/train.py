"""`train(config, model_dir)`: fit with callbacks, resume from the latest checkpoint, save the model."""

import json
import math
import os
import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from kcaptcha import callbacks as kc_callbacks
from kcaptcha import data, saving
from kcaptcha.model import build_model, compile_model
from kcaptcha.vocab import Vocab

STATE_FILE = "train_state.json"


def learning_rate_schedule(config):
    """Linear warm-up to `learning_rate`, then cosine decay to 2% of it at `max_steps`."""
    warmup = min(500, max(1, config.max_steps // 10))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate * 0.1,
        decay_steps=max(1, config.max_steps - warmup),
        alpha=0.02,
        warmup_target=config.learning_rate,
        warmup_steps=warmup,
    )


def new_model(config) -> keras.Model:
    keras.utils.set_random_seed(config.seed)
    model = build_model(config)
    learning_rate = None if config.model == "legacy" else learning_rate_schedule(config)
    return compile_model(model, config, learning_rate)


def datasets(config, start_step: int = 0):
    """(train, validation) datasets: folders when configured, otherwise on-the-fly synthetic captchas."""
    if config.uses_synthetic_data:
        train_ds = data.synthetic_dataset(config, start_batch=start_step)
        images, label_ids, _ = data.synthetic_arrays(config, config.val_size, data.validation_seed(config))
        val_ds = tf.data.Dataset.from_tensor_slices((images, label_ids)).batch(256).cache()
        return train_ds, val_ds
    vocab = Vocab.from_config(config)
    paths, label_ids = data.labelled_files(config.train_dir, vocab)
    if config.val_dir:
        val_paths, val_ids = data.labelled_files(config.val_dir, vocab)
    else:  # hold out a fixed 10% of the training folder
        order = np.random.default_rng(config.seed).permutation(len(paths))
        cut = max(1, len(paths) // 10)
        held, kept = order[:cut], order[cut:]
        val_paths, val_ids = [paths[i] for i in held], label_ids[held]
        paths, label_ids = [paths[i] for i in kept], label_ids[kept]
    train_ds = data.file_dataset(paths, label_ids, config, training=True)
    val_ds = data.file_dataset(val_paths, val_ids, config, training=False, batch_size=256)
    return train_ds, val_ds


def _resume(config, model_dir: str, fresh: bool):
    checkpoint_dir = os.path.join(model_dir, "checkpoints")
    checkpoints = [] if fresh else kc_callbacks.list_checkpoints(checkpoint_dir)
    if not checkpoints:
        return new_model(config), 0
    step, path = checkpoints[-1]
    print(f"Resuming from {path} (step {step}); pass --fresh to start over.")
    return keras.models.load_model(path), step


def _check_model_dir(config, model_dir: str, fresh: bool) -> None:
    config_path = os.path.join(model_dir, "config.json")
    if fresh or not os.path.exists(config_path):
        return
    with open(config_path, encoding="utf-8") as f:
        previous = json.load(f)
    current = config.to_dict()
    task_fields = ("charset", "min_length", "max_length", "width", "height", "model", "conv_filters", "head_units")
    # JSON has no tuples: compare list fields as tuples.
    changed = [k for k in task_fields
               if (tuple(previous[k]) if isinstance(previous.get(k), list) else previous.get(k)) != current[k]]
    if changed:
        raise ValueError(f"{model_dir} holds a run with a different {', '.join(changed)}; "
                         "use another --model_dir or pass --fresh to start over.")


def train(config, model_dir: str, fresh: bool = False, save_dir: Optional[str] = None, verbose: int = 1) -> dict:
    """Trains `config` in `model_dir` (resuming unless `fresh`) and saves the best model to `save_dir`.

    Returns:
        A summary: steps, wall time, stop reason, best validation metrics, and the saved folder.
    """
    config.validate()
    model_dir = os.path.abspath(model_dir)
    _check_model_dir(config, model_dir, fresh)
    os.makedirs(model_dir, exist_ok=True)
    if fresh:
        for _, path in kc_callbacks.list_checkpoints(os.path.join(model_dir, "checkpoints")):
            os.remove(path)
        for name in ("history.csv", "best.keras", "best.keras.json", STATE_FILE):
            if os.path.exists(os.path.join(model_dir, name)):
                os.remove(os.path.join(model_dir, name))
    kc_callbacks.atomic_write_text(os.path.join(model_dir, "config.json"), config.to_json())

    model, start_step = _resume(config, model_dir, fresh)
    state_path = os.path.join(model_dir, STATE_FILE)
    state = {"wall_seconds": 0.0}
    if start_step and os.path.exists(state_path):
        with open(state_path, encoding="utf-8") as f:
            state.update(json.load(f))
    best_path = os.path.join(model_dir, "best.keras")
    best_so_far = -1.0
    if start_step and os.path.exists(best_path + ".json"):
        with open(best_path + ".json", encoding="utf-8") as f:
            best_so_far = json.load(f).get("val_image_accuracy", -1.0)

    train_ds, val_ds = datasets(config, start_step)
    target_stop = kc_callbacks.TargetAccuracyStop(config.target_accuracy)
    best = kc_callbacks.BestModel(best_path, best=best_so_far)
    callbacks = [
        kc_callbacks.StepLogger(),
        target_stop,
        best,
        keras.callbacks.EarlyStopping(monitor="val_image_accuracy", mode="max", patience=config.patience),
        kc_callbacks.PeriodicCheckpoint(os.path.join(model_dir, "checkpoints"), config.checkpoint_every_steps,
                                        config.keep_checkpoints),
        keras.callbacks.CSVLogger(os.path.join(model_dir, "history.csv"), append=start_step > 0),
        keras.callbacks.TensorBoard(os.path.join(model_dir, "logs"), update_freq="epoch", profile_batch=0),
    ]
    time_limit = None
    if config.max_train_seconds:
        time_limit = kc_callbacks.TimeLimit(config.max_train_seconds)
        callbacks.append(time_limit)
    epochs = math.ceil(config.max_steps / config.eval_every_steps)
    initial_epoch = start_step // config.eval_every_steps
    started = time.time()
    stop_reason = "max_steps"
    if initial_epoch < epochs:
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=config.eval_every_steps, callbacks=callbacks, verbose=verbose, shuffle=False)
    wall = state["wall_seconds"] + time.time() - started
    steps = int(model.optimizer.iterations.numpy())
    if target_stop.reached is not None:
        stop_reason = "target_accuracy"
    elif time_limit is not None and time_limit.reached:
        stop_reason = "max_train_seconds"
    elif steps < config.max_steps and initial_epoch < epochs:
        stop_reason = "patience"
    kc_callbacks.atomic_write_text(state_path, json.dumps({"wall_seconds": wall, "steps": steps}))
    kc_callbacks.plot_learning_curves(os.path.join(model_dir, "history.csv"),
                                      os.path.join(model_dir, "learning_curves.png"))

    final_model = keras.models.load_model(best_path) if os.path.exists(best_path) else model
    best_logs = dict(best.best_logs)
    if not best_logs and os.path.exists(best_path + ".json"):
        with open(best_path + ".json", encoding="utf-8") as f:
            best_logs = json.load(f)
    summary = {
        "steps": steps,
        "images_seen": steps * config.batch_size,
        "wall_seconds": round(wall, 1),
        "stop_reason": stop_reason,
        "best_step": best_logs.get("step"),
        "data": "synthetic (on the fly)" if config.uses_synthetic_data else config.train_dir,
    }
    metrics = {k: round(v, 5) for k, v in best_logs.items() if k.startswith("val_")}
    if save_dir:
        metadata = saving.build_metadata(config, summary, metrics)
        summary["saved_to"] = saving.save_model_folder(final_model, metadata, save_dir)
    summary["metrics"] = metrics
    return summary
