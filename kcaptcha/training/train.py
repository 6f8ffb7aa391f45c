"""`train(config, model_dir)`: the one fit loop (also used by tuning), resume, and saving the best model.

A run folder (`runs/<name>` by default) holds:
    config.json     the run's configuration (a resumed run must match its task and model fields)
    run.json        the run's id, which the saved model records (so a re-run may replace its own model)
    backup/         Keras' BackupAndRestore state, written every `checkpoint_every_steps` steps and at the end
    .lock           held by the training that uses the folder: a second one is refused, naming the first
    best.keras      the model with the best validation whole-image accuracy so far
    history.csv     one row per validation; TensorBoard logs in logs/; learning_curves.png
"""

import contextlib
import csv
import os
import shutil
import sys
import time
import uuid
from typing import Dict, Iterable, Optional, Sequence

import keras
import numpy as np

from kcaptcha import files, models
from kcaptcha.config import Config
from kcaptcha.data import generate, pipeline
from kcaptcha.data.folder import LabelledFolder
from kcaptcha.data.pool import CaptchaPool
from kcaptcha.export import saving
from kcaptcha.reading.vocab import Vocab
from kcaptcha.training import callbacks as kc_callbacks
from kcaptcha.training import distribute, keras_compat, plots, selftrain, transfer
from kcaptcha.training.callbacks import AtomicModelCheckpoint
from kcaptcha.training.resolve import previous_run_id, resolve

MONITOR = "val_image_accuracy"
TRAIN_SAMPLE_SIZE = 512  # training images scored at each validation, to show over-fitting


def evaluation_sets(config) -> Dict[str, pipeline.LabelledImages]:
    """{log prefix: labelled images} scored at every validation, and the training (paths, labels) if any."""
    if config.uses_synthetic_data:
        return {"val_": pipeline.synthetic_set(config, config.val_size, pipeline.validation_seed(config))}, None
    vocab = Vocab.from_config(config)
    folder = LabelledFolder.open(config.train_dir, config.label_from)
    folder.checked(vocab)
    if config.val_dir:
        (paths, labels), (val_paths, val_labels) = folder.labelled(), pipeline.labelled_files(config.val_dir, config)
    else:  # hold out a fixed share of the training folder
        (paths, labels), (val_paths, val_labels) = folder.holdout(config.seed)
    sample = np.random.default_rng(config.seed + 1).permutation(len(paths))[:TRAIN_SAMPLE_SIZE]
    sets = {"val_": pipeline.LabelledImages(pipeline.image_dataset(val_paths, config), val_labels),
            "": pipeline.LabelledImages(pipeline.image_dataset([paths[i] for i in sample], config),
                                        [labels[i] for i in sample])}
    return sets, (paths, labels)


@contextlib.contextmanager
def naming_unreadable_images(config):
    """Turns a decoder's error deep in tf.data, which names no file, into a `ValueError` naming the training
    or validation images that do not decode (a truncated download, say), found by `bin/prepare`'s check."""
    import tensorflow as tf

    from kcaptcha.data.prepare import check_image

    try:
        yield
    except tf.errors.InvalidArgumentError:
        checks = [(path, check_image(folder, os.path.relpath(path, folder)))
                  for folder in (config.train_dir, config.val_dir) if folder for path in files.list_images(folder)]
        bad = [(path, check.message) for path, check in checks if check.reason]
        if not bad:
            raise
        shown = "; ".join(f"{path}: {reason}" for path, reason in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ValueError(f"{len(bad)} image(s) cannot be decoded: {shown}{more}. Replace or remove them "
                         f"(bin/prepare reports such files and leaves them out of its split)") from None


def synthetic_fraction(config, train_files) -> float:
    """The share of synthetic captchas in each batch: all without files, else `synthetic_mix` (which
    `resolve` sets by the folder's size when it is not given)."""
    if train_files is None:
        return 1.0
    return max(0.0, config.synthetic_mix)


def pool_size(config, train_files) -> int:
    """Synthetic captchas held in memory: `pool_size`, at most 5,000 beside a folder's images."""
    return config.pool_size if train_files is None else min(config.pool_size, 5000)


def data_line(config, sets, train_files) -> str:
    """What training reads, said while the pool fills and the training step is built (a minute or more)."""
    parts = [] if train_files is None else [f"{len(train_files[0])} training images"]
    fraction = synthetic_fraction(config, train_files)
    if fraction:
        size = pool_size(config, train_files)
        processes = generate.default_workers(config.data_workers)
        share = "" if fraction == 1.0 else f"{fraction:.0%} of each batch from "
        parts.append(f"{share}a pool of {size} synthetic captchas drawn by {processes} "
                     f"process{'es' if processes > 1 else ''}")
    return (f"Training on {', '.join(parts)}; validating on {len(sets['val_'].labels)} images every "
            f"{config.eval_every_steps} steps. Starting ...")


@contextlib.contextmanager
def training_data(config, train_files, start_index: int = 0, workers: Optional[distribute.Workers] = None):
    """Yields (training batches, the captcha pool or None): files, synthetic captchas, or both mixed.

    With `workers` (a strategy), the batches are this worker's, for `fit` to split across its replicas:
    its shard of the files, and synthetic captchas from its own seed (pass `config` with that seed).
    The pool's background renewal stops when the block ends.
    """
    workers = workers or distribute.Workers()
    fraction = synthetic_fraction(config, train_files)

    def batches(pool):
        return workers.distribute(lambda batch_size, index, count: pipeline.training_batches(
            config, train_files, pool, fraction, batch_size, (count, index)), config.batch_size)

    if fraction == 0.0:
        yield batches(None), None
        return
    with CaptchaPool(config, pool_size(config, train_files), start_index=start_index) as captchas:
        yield batches(captchas), captchas


def fit(model, config, train_ds, sets, run_dir: Optional[str] = None, callbacks: Sequence = (),
        epochs: Optional[int] = None, initial_epoch: int = 0, clock_offset: float = 0.0, pool=None,
        verbose: int = 1, workers: Optional[distribute.Workers] = None) -> dict:
    """Fits `model` as every kcaptcha training does; returns steps, seconds and why it stopped.

    One Keras epoch is `eval_every_steps` steps and ends with a validation (`callbacks.Validation`). With
    `run_dir`, the run is backed up every `checkpoint_every_steps` steps and resumed from there, the best
    model is kept, and the history is logged. `epochs` (Hyperband's budget) defaults to the whole run.
    With a captcha `pool`, each history row records how many captchas it has drawn (`captchas_drawn`; with
    several `workers`, the most any worker drew, where each continues its own stream on resume). With
    several workers, every stop is decided alike on every worker, and only the chief writes `run_dir`.
    """
    workers = workers or distribute.Workers()
    output = models.get(config.architecture).output
    extra = (lambda: {"captchas_drawn": int(workers.gather(pool.rendered).max())}) if pool is not None else None
    validation = kc_callbacks.Validation(sets, output, Vocab.from_config(config), clock_offset, extra, workers)
    limits = {"target_accuracy": kc_callbacks.TargetAccuracyStop(config.target_accuracy, min_step=config.min_steps),
              "max_steps": kc_callbacks.StepLimit(config.max_steps)}
    if config.max_train_seconds:
        limits["max_train_seconds"] = kc_callbacks.TimeLimit(
            config.max_train_seconds, *((lambda s: workers.gather(s).max(), 10) if workers.count > 1 else ()))
    limits["plateau"] = kc_callbacks.PlateauStop(config.patience, min_step=config.min_steps)
    every = [validation, *limits.values()]
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # under mixed_float16's loss scaling
    if getattr(optimizer, "use_ema", False):  # validate and save the averaged weights
        every.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if run_dir:
        every += run_callbacks(run_dir, config, workers.is_chief)
    if verbose:
        every.append(kc_callbacks.Progress(config.max_steps))
    last_epoch = epochs if epochs is not None else -(-config.max_steps // config.eval_every_steps) + 1
    start_step, started = kc_callbacks.step_of(model), time.monotonic()
    model.fit(train_ds, epochs=last_epoch, initial_epoch=initial_epoch, steps_per_epoch=config.eval_every_steps,
              callbacks=[*every, *callbacks], verbose=0, shuffle=False)
    steps = kc_callbacks.step_of(model)
    reason = next((name for name, callback in limits.items() if callback.reached), "budget")
    return {"steps": steps, "steps_this_run": steps - start_step, "stop_reason": reason,
            "stop_detail": limits["plateau"].reached if reason == "plateau" else None,
            "fit_seconds": round(time.monotonic() - started, 1), "last_validation": validation.latest}


def run_callbacks(run_dir: str, config, chief: bool = True) -> list:
    """Back up and resume, keep the best model (`AtomicModelCheckpoint`), log history and TensorBoard.

    A worker other than the chief only backs up (into its own folder), so that it resumes as the chief does.
    """
    history = os.path.join(run_dir, "history.csv")
    best_so_far = best_row(history).get(MONITOR)
    backup = keras_compat.BackupAtEnd(os.path.join(run_dir, "backup"), save_freq=config.checkpoint_every_steps)
    if not chief:
        return [backup]
    return [
        backup,
        AtomicModelCheckpoint(os.path.join(run_dir, "best.keras"), monitor=MONITOR, mode="max",
                              save_best_only=True, initial_value_threshold=best_so_far),
        keras.callbacks.CSVLogger(history, append=True),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"), update_freq="epoch", profile_batch=0),
    ]


def best_row(history_csv: str) -> dict:
    """The history row with the best validation whole-image accuracy (numbers as floats), or {}; of equal
    ones the last, the model `AtomicModelCheckpoint` keeps."""
    if not os.path.exists(history_csv):
        return {}
    with open(history_csv, newline="") as f:
        rows = [{k: float(v) for k, v in row.items() if v not in ("", None, "NA")} for row in csv.DictReader(f)]
    rows = [row for row in rows if MONITOR in row]
    return max(reversed(rows), key=lambda row: row[MONITOR]) if rows else {}


def last_row(history_csv: str) -> dict:
    if not os.path.exists(history_csv):
        return {}
    with open(history_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for k, v in rows[-1].items() if v not in ("", None, "NA")} if rows else {}


def open_run(config, model_dir: str, fresh: bool) -> dict:
    """Creates or resumes the run folder; returns its run.json (the run id, and how it ended if it did).

    Refuses a folder that holds a run of another task or model. `fresh` clears what a run left.
    """
    config_path, run_path = os.path.join(model_dir, "config.json"), os.path.join(model_dir, "run.json")
    if fresh:
        for name in ("backup", "logs"):
            shutil.rmtree(os.path.join(model_dir, name), ignore_errors=True)
        for name in ("best.keras", "history.csv", "learning_curves.png", "run.json"):
            if os.path.exists(os.path.join(model_dir, name)):
                os.remove(os.path.join(model_dir, name))
    run = files.read_json(run_path) if os.path.exists(run_path) else {"run_id": uuid.uuid4().hex}
    if os.path.exists(config_path):
        # A field the run's config.json lacks is one added since; that run used its default.
        previous = {**Config().subset(), **files.read_json(config_path)}
        changed = [k for k in Config.field_names("task", "model") if previous.get(k) != config.subset()[k]]
        if changed:
            raise ValueError(f"{model_dir} holds a run with a different {', '.join(changed)}; "
                             "use another --model_dir or pass --fresh to start over.")
        # A finished run never stopped on its time cap (that run is not marked finished), so another
        # max_train_seconds is not a request for more training.
        reopening = [k for k in Config.field_names("training") if k != "max_train_seconds"]
        if any(previous.get(k) != config.subset()[k] for k in reopening):
            run.pop("finished", None)  # asked for more (or other) training: the run goes on
    os.makedirs(model_dir, exist_ok=True)
    files.atomic_write_text(config_path, config.to_json())
    files.atomic_write_json(run_path, run)
    return run


def restore(model, run_dir: str) -> int:
    """Loads the run's backup into `model` (as BackupAndRestore will when fit starts); returns the step.

    Done before fit so that the synthetic stream can continue at the restored step and a finished run
    is not trained again.
    """
    keras_compat.restore_backup(model, os.path.join(run_dir, "backup"))
    step = kc_callbacks.step_of(model)
    if step:
        print(f"Resuming {run_dir} from step {step}; pass --fresh to start over.", flush=True)
    return step


def train(config, model_dir: str, fresh: bool = False, save_dir: Optional[str] = None, overwrite: bool = False,
          verbose: int = 1, given: Optional[Iterable[str]] = None) -> dict:
    """Trains `config` in `model_dir` (resuming unless `fresh`) and saves the best model to `save_dir`.

    The run is first resolved (`kcaptcha.training.resolve`): the fields not in `given` may be chosen from the
    base model (`init_from`) and the training folder; `given=None` counts the fields that differ from
    `Config()`'s as given. Re-running a finished run with the same configuration trains no further; it only
    saves again. Under `--strategy=multi_worker` every worker runs this with the same arguments (`model_dir`
    a folder they all see); only the chief writes it and `save_dir` (see `kcaptcha.training.distribute`).

    Returns:
        A summary: steps, wall time, stop reason, best validation metrics, and the saved folder.
    """
    config, notes = resolve(config, given)
    if verbose:
        for note in notes:
            print(note, flush=True)
    unlabelled = selftrain.unlabelled_images(config) if config.self_training_rounds else []
    if unlabelled:
        return selftrain.self_train(config, model_dir, unlabelled, _train_resolved, fresh, save_dir, overwrite,
                                    verbose)
    return _train_resolved(config, model_dir, fresh, save_dir, overwrite, verbose)


def _train_resolved(config, model_dir: str, fresh: bool = False, save_dir: Optional[str] = None,
                    overwrite: bool = False, verbose: int = 1) -> dict:
    """One run of a resolved `config` (see `train`)."""
    workers = distribute.make(config.strategy)  # before any other TensorFlow op, as multi-worker needs
    workers.per_replica_batch(config.batch_size)
    model_dir = os.path.abspath(model_dir)
    if workers.is_chief and save_dir:  # refused before the run folder is made
        saving.check_can_save(save_dir, previous_run_id(model_dir, fresh), overwrite)
    with files.folder_in_use(model_dir) if workers.is_chief else contextlib.nullcontext():
        return _train_in(config, model_dir, workers, fresh, save_dir, overwrite, verbose)


def _train_in(config, model_dir: str, workers, fresh: bool, save_dir: Optional[str], overwrite: bool,
              verbose: int) -> dict:
    """`_train_resolved` in its run folder, which the chief holds."""
    work_dir = distribute.worker_dir(model_dir, workers.index)
    run = {"run_id": None}
    if workers.is_chief:
        run = open_run(config, model_dir, fresh)
    history = os.path.join(model_dir, "history.csv")
    # The chief's run folder is ready (or cleared by `fresh`): every worker now starts from its state.
    previous = last_row(history) if workers.is_chief else {}
    finished, drawn, clock = workers.broadcast([
        "finished" in run, previous.get("captchas_drawn", 0), previous.get("wall_seconds", 0.0)])
    distribute.start_worker_dir(model_dir, workers.index)
    with distribute.precision(config.mixed_precision), workers.scope():
        model = models.new_model(config)
        start_step = restore(model, work_dir)
        if config.init_from and start_step == 0:
            initialized_from = transfer.copy_weights(model, config.init_from, config.charset)
            if workers.is_chief:
                run["initialized_from"] = initialized_from
                files.atomic_write_json(os.path.join(model_dir, "run.json"), run)
    result = run.get("finished") or {"steps": start_step, "stop_reason": "max_steps"}
    result = {**result, "steps_this_run": 0, "fit_seconds": 0.0}
    if start_step < config.max_steps and not finished:
        sets, train_files = evaluation_sets(config)
        if verbose:
            print(data_line(config, sets, train_files), flush=True)
        own = config.replace(seed=distribute.data_seed(config.seed, workers.index))  # this worker's stream
        with training_data(own, train_files, int(drawn), workers) as (batches, pool):
            distribute.prepare_fit(model, workers)
            with naming_unreadable_images(config):
                result = fit(model, config, batches, sets, run_dir=work_dir, pool=pool, verbose=verbose,
                             clock_offset=float(clock), workers=workers)
        if result["stop_reason"] != "max_train_seconds" and workers.is_chief:
            files.atomic_write_json(os.path.join(model_dir, "run.json"), {**run, "finished": {
                "steps": result["steps"], "stop_reason": result["stop_reason"]}})
    if not workers.is_chief:
        shutil.rmtree(work_dir, ignore_errors=True)
        return {**result, "run_dir": model_dir, "worker": workers.index}
    return _summarise(config, model, model_dir, run, result, save_dir, overwrite)


def _synthetic_fonts(config) -> dict:
    """{"fonts": names} where synthetic captchas were drawn with fonts given or found on this machine (another
    machine may find others, and draw other captchas from the same seed); {} for the library's own font."""
    if config.train_dir:
        return {}
    fonts = generate.CaptchaRenderer.from_config(config).fonts
    return {"fonts": generate.font_names(fonts)} if fonts else {}


SUMMARY_FILE = "summary.json"


def write_summary(summary: dict) -> Optional[str]:
    """Writes the chief's summary to `<run folder>/summary.json`; returns its path (None for a worker)."""
    if "run_id" not in summary:
        return None
    path = os.path.join(summary["run_dir"], SUMMARY_FILE)
    files.atomic_write_json(path, summary)
    return path


def summary_line(summary: dict, seconds: float) -> str:
    """The one line that ends a training: where the model went, how well it read, why it stopped."""
    if "run_id" not in summary:
        return f"Worker {summary.get('worker')} done ({summary.get('steps')} steps); the chief saves the model."
    metrics = summary.get("metrics") or {}
    accuracy = (f"val_image_accuracy {metrics['val_image_accuracy']:.4f} at step {summary.get('best_step')}"
                if "val_image_accuracy" in metrics else "no validation yet")
    where = f"Saved {summary['saved_to']}" if summary.get("saved_to") else "Trained"
    export = summary.get("export")
    failed = "; ONNX export failed (see summary.json)" if isinstance(export, str) else ""
    selftraining = summary.get("self_training")
    if selftraining:
        failed = (f"; self-training kept round {selftraining['kept_round']} ({selftraining['pseudo_labels']} "
                  f"pseudo-labels of {selftraining['unlabelled']} unlabelled images)") + failed
    reason = summary["stop_reason"] + (f": {summary['stop_detail']}" if summary.get("stop_detail") else "")
    return (f"{where}: {accuracy}; stopped at step {summary['steps']} ({reason}) after "
            f"{kc_callbacks.duration(seconds)}{failed}. Details: "
            f"{os.path.join(summary['run_dir'], SUMMARY_FILE)}")


def _summarise(config, model, model_dir: str, run: dict, result: dict, save_dir: Optional[str],
               overwrite: bool) -> dict:
    """The chief's end of a run: learning curves, the summary, and the saved model (float32)."""
    history = os.path.join(model_dir, "history.csv")
    plots.learning_curves(history, os.path.join(model_dir, "learning_curves.png"))
    best = best_row(history)
    summary = {**result, "images_seen": result["steps"] * config.batch_size,
               "wall_seconds": round(last_row(history).get("wall_seconds", 0.0), 1),
               "best_step": int(best["step"]) if "step" in best else None, "run_dir": model_dir,
               "run_id": run["run_id"], "data": config.train_dir or "synthetic (on the fly)",
               **_synthetic_fonts(config),
               "initialized_from": run.get("initialized_from"),
               "metrics": {k: round(v, 5) for k, v in best.items() if k.startswith("val_")}}
    if best and best.get(MONITOR, 0.0) == 0.0:
        summary["warning"] = (
            f"the best model read none of its validation images after {result['steps']} steps (character "
            f"accuracy {best.get('val_character_accuracy', 0.0):.2f}): train longer (--max_steps) or check the labels")
        print(f"warning: {summary['warning']}", file=sys.stderr, flush=True)
    if save_dir:
        best_path = os.path.join(model_dir, "best.keras")
        final = keras.models.load_model(best_path) if os.path.exists(best_path) else model
        summary["saved_to"] = saving.save_model_folder(
            distribute.float32_copy(final, config), saving.build_metadata(config, summary, summary["metrics"]),
            save_dir, run["run_id"], overwrite)
    return summary
