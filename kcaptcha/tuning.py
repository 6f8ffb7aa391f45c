"""keras-tuner sweeps: the search space, the hypermodel, the tuner factory and the results of a search.

Each trial maps its `hp.*` values onto a `Config` and then trains exactly as `bin/train` does: the same
`build_model`, learning-rate schedule, data pipeline and early stop on whole-image accuracy.
"""

import csv
import glob
import hashlib
import importlib.util
import json
import math
import os
import socket
import time
import warnings

import keras
import keras_tuner

from kcaptcha import callbacks as kc_callbacks
from kcaptcha import saving, train
from kcaptcha.config import Config

TUNERS = ("hyperband", "random", "bayesian")
OBJECTIVE = keras_tuner.Objective("val_image_accuracy", direction="max")
REFERENCE_WIDTHS = (24, 48, 96, 128, 160)  # conv filters at width_multiplier=1.0 (Config's default stack)
HYPERPARAMETERS = ("conv_blocks", "width_multiplier", "dropout_rate", "head_units", "learning_rate",
                   "batch_size", "augment")
TUNED_FIELDS = ("conv_filters", "dropout_rate", "head_units", "learning_rate", "batch_size", "augment")
# Fields that change neither what a trial learns nor how it is scored; a search may resume across them.
UNSCORED_FIELDS = ("name", "workers", "checkpoint_every_steps", "keep_checkpoints")
SEARCH_FILE = "kcaptcha_search.json"
RUN_FILE_PATTERN = "kcaptcha_run_*.json"


def config_from_hyperparameters(base: Config, hp: keras_tuner.HyperParameters) -> Config:
    """The search space: reads every `hp.*` value and returns `base` with the tuned fields replaced."""
    conv_blocks = hp.Int("conv_blocks", 2, 5, default=4)
    width_multiplier = hp.Choice("width_multiplier", [0.5, 0.75, 1.0, 1.5], default=1.0)
    dropout_rate = hp.Float("dropout_rate", 0.0, 0.5, step=0.05, default=0.25)
    head_units = hp.Choice("head_units", [0, 128, 256, 512], default=0)
    learning_rate = hp.Float("learning_rate", 3e-4, 1e-2, sampling="log", default=2e-3)
    batch_size = hp.Choice("batch_size", [32, 64, 128, 256], default=128)
    augment = hp.Float("augment", 0.0, 1.0, step=0.25, default=0.5)
    conv_filters = tuple(max(4, round(width * width_multiplier)) for width in REFERENCE_WIDTHS[:conv_blocks])
    return base.replace(conv_filters=conv_filters, dropout_rate=round(dropout_rate, 4), head_units=head_units,
                        learning_rate=float(learning_rate), batch_size=batch_size, augment=round(augment, 4))


def num_epochs(config: Config) -> int:
    """Validations in a full run: one Keras epoch is `eval_every_steps` steps, as in `bin/train`."""
    return math.ceil(config.max_steps / config.eval_every_steps)


class CaptchaHyperModel(keras_tuner.HyperModel):
    """Builds and fits the `bin/train` model for the `Config` a trial's hyperparameters give."""

    def __init__(self, base_config: Config, verbose=1):
        super().__init__(name="kcaptcha")
        self.base_config = base_config
        self.verbose = verbose
        self.last_fit = {}

    def build(self, hp):
        return train.new_model(config_from_hyperparameters(self.base_config, hp))

    def fit(self, hp, model, *args, **kwargs):
        # The batch size is tuned, so the data pipeline is built here, per trial.
        config = config_from_hyperparameters(self.base_config, hp)
        train_ds, val_ds = train.datasets(config)
        target_stop = kc_callbacks.TargetAccuracyStop(config.target_accuracy)
        callbacks = [
            kc_callbacks.StepLogger(),
            target_stop,
            keras.callbacks.EarlyStopping(monitor="val_image_accuracy", mode="max", patience=config.patience),
            *kwargs.pop("callbacks", []),  # the tuner's own: best-epoch checkpoint, TensorBoard
        ]
        epochs = kwargs.pop("epochs", num_epochs(config))  # Hyperband passes its budget
        initial_epoch = kwargs.pop("initial_epoch", 0)
        started = time.time()
        history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch,
                            steps_per_epoch=config.eval_every_steps, callbacks=callbacks,
                            verbose=kwargs.pop("verbose", self.verbose), shuffle=False)
        steps = int(model.optimizer.iterations.numpy())
        if target_stop.reached is not None:
            stop_reason = "target_accuracy"
        elif steps < (epochs - initial_epoch) * config.eval_every_steps:
            stop_reason = "patience"
        else:
            stop_reason = "max_steps" if epochs >= num_epochs(config) else "budget"
        self.last_fit = {"conv_filters": list(config.conv_filters), "parameters": int(model.count_params()),
                         "steps": steps, "fit_seconds": round(time.time() - started, 1),
                         "stop_reason": stop_reason}
        return history


class _RecordsRuns:
    """Tuner mixin: each run of a trial leaves `kcaptcha_run_<tuner id>.json` in the trial folder."""

    def run_trial(self, trial, *args, **kwargs):
        started = time.time()
        self.hypermodel.last_fit = {}
        finished = False
        try:
            results = super().run_trial(trial, *args, **kwargs)
            finished = True
            return results
        finally:
            record = {"trial_id": trial.trial_id, "tuner_id": self.tuner_id, "host": socket.gethostname(),
                      "pid": os.getpid(), "finished": finished, "seconds": round(time.time() - started, 1),
                      **self.hypermodel.last_fit}
            path = os.path.join(self.get_trial_dir(trial.trial_id), f"kcaptcha_run_{self.tuner_id}.json")
            kc_callbacks.atomic_write_text(path, json.dumps(record, indent=2))
            self.trials_run = [*getattr(self, "trials_run", []), trial.trial_id]


class RandomSearch(_RecordsRuns, keras_tuner.RandomSearch):
    pass


class BayesianOptimization(_RecordsRuns, keras_tuner.BayesianOptimization):
    pass


class Hyperband(_RecordsRuns, keras_tuner.Hyperband):
    pass


def check_arguments(config: Config, tuner: str, max_trials: int) -> None:
    """Raises `ValueError` for a tuner, trial count or config that a search cannot use."""
    if tuner not in TUNERS:
        raise ValueError(f"tuner must be one of {', '.join(TUNERS)}. Received: tuner={tuner!r}")
    if not isinstance(max_trials, int) or max_trials < 1:
        raise ValueError(f"max_trials must be at least 1. Received: max_trials={max_trials!r}")
    if config.model != "default":
        raise ValueError(f"Only model=default has a search space (legacy is the parent's fixed network). "
                         f"Received: model={config.model!r}")
    if tuner == "bayesian" and not all(importlib.util.find_spec(m) for m in ("scipy", "sklearn")):
        raise ValueError("tuner=bayesian needs scipy and scikit-learn: pip install 'keras-tuner[bayesian]', "
                         "or use tuner=random or tuner=hyperband.")
    config.validate()


def build_tuner(tuner: str, hypermodel: CaptchaHyperModel, tune_dir: str, max_trials: int,
                overwrite: bool = False):
    """A keras-tuner `Tuner` whose project folder is `tune_dir` (reloaded from there unless `overwrite`)."""
    config = hypermodel.base_config
    tune_dir = os.path.abspath(tune_dir)
    common = dict(hypermodel=hypermodel, objective=OBJECTIVE, directory=os.path.dirname(tune_dir),
                  project_name=os.path.basename(tune_dir), overwrite=overwrite,
                  seed=config.seed + 1)  # keras-tuner reads seed 0 as "no seed"
    if tuner == "random":
        return RandomSearch(max_trials=max_trials, **common)
    if tuner == "bayesian":
        return BayesianOptimization(max_trials=max_trials, **common)
    instance = Hyperband(max_epochs=num_epochs(config), factor=3, **common)
    if isinstance(instance.oracle, keras_tuner.Oracle):  # on a worker only the chief's oracle counts
        instance.oracle.max_trials = max_trials  # Hyperband has no max_trials of its own; cap the trials
    return instance


def distributed_role() -> str:
    """'chief', 'worker' or 'single', from keras-tuner's KERASTUNER_* environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    for name in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        if name not in os.environ:
            raise ValueError(f"KERASTUNER_ORACLE_IP is set but {name} is not; distributed tuning needs "
                             "KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT.")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def search_fingerprint(config: Config, tuner: str) -> dict:
    """What makes two searches the same one: tuner, hyperparameter space and the untuned config."""
    hp = keras_tuner.HyperParameters()
    config_from_hyperparameters(config, hp)
    space = {item["config"]["name"]: item for item in hp.get_config()["space"]}
    fixed = {k: v for k, v in config.to_dict().items() if k not in TUNED_FIELDS + UNSCORED_FIELDS}
    described = {"tuner": tuner, "space": space, "config": json.loads(json.dumps(fixed))}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]
    return {"fingerprint": digest, **described}


def _differences(previous: dict, current: dict) -> list:
    found = []
    if previous.get("tuner") != current["tuner"]:
        found.append(f"tuner {previous.get('tuner')!r} -> {current['tuner']!r}")
    old_space, new_space = previous.get("space", {}), current["space"]
    changed = sorted(n for n in set(old_space) | set(new_space) if old_space.get(n) != new_space.get(n))
    if changed:
        found.append(f"hyperparameters {', '.join(changed)}")
    old_config = previous.get("config", {})
    for key, value in current["config"].items():
        if old_config.get(key) != value:
            found.append(f"{key} {old_config.get(key)!r} -> {value!r}")
    return found


def check_tune_dir(tune_dir: str, fingerprint: dict, overwrite: bool = False, worker: bool = False) -> None:
    """Refuses to resume a folder that holds a different search (or none, for a worker)."""
    path = os.path.join(tune_dir, SEARCH_FILE)
    if overwrite:
        return
    if not os.path.exists(path):
        if worker:
            raise ValueError(f"{tune_dir} holds no {SEARCH_FILE}: give every worker the chief's --tune_dir "
                             "on a folder they all share.")
        if glob.glob(os.path.join(tune_dir, "*.json")) or glob.glob(os.path.join(tune_dir, "trial_*")):
            raise ValueError(f"{tune_dir} holds files but no {SEARCH_FILE}, so it is not a kcaptcha search; "
                             "use another --tune_dir or pass --overwrite to start over.")
        return
    try:
        with open(path, encoding="utf-8") as f:
            previous = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"Damaged search file {path}: {error}; pass --overwrite to start over.") from None
    if previous.get("fingerprint") != fingerprint["fingerprint"]:
        differences = "; ".join(_differences(previous, fingerprint)) or "the search space"
        advice = ("start the chief and every worker with the same flags" if worker else
                  "use another --tune_dir or pass --overwrite to start it over")
        raise ValueError(f"{tune_dir} holds a different search ({differences}); {advice}.")


def trial_rows(kt_tuner, base_config: Config) -> list:
    """One summary row per trial, best first: hyperparameters, score, parameters, time and worker."""
    rows = []
    for trial_id, trial in sorted(kt_tuner.oracle.trials.items()):
        hp = trial.hyperparameters.copy()
        config = config_from_hyperparameters(base_config, hp)
        paths = sorted(glob.glob(os.path.join(kt_tuner.get_trial_dir(trial_id), RUN_FILE_PATTERN)),
                       key=os.path.getmtime)
        records = []
        for path in paths:
            with open(path, encoding="utf-8") as f:
                records.append(json.load(f))
        record = records[-1] if records else {}  # the latest run, should a trial ever have been retried
        rows.append({
            "trial": trial_id,
            "status": trial.status,
            **{name: hp.get(name) for name in HYPERPARAMETERS},
            "conv_filters": ",".join(str(f) for f in config.conv_filters),
            "val_image_accuracy": None if trial.score is None else round(float(trial.score), 5),
            "parameters": record.get("parameters"),
            "steps": record.get("steps"),
            "seconds": record.get("seconds"),
            "run_by": ",".join(r["tuner_id"] for r in records),
        })
    done = sorted((r for r in rows if r["val_image_accuracy"] is not None),
                  key=lambda r: -r["val_image_accuracy"])
    return done + [r for r in rows if r["val_image_accuracy"] is None]


def format_table(rows: list) -> str:
    """The rows as an aligned text table."""
    if not rows:
        return "(no trials)"
    columns = list(rows[0])

    def cell(value):
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 0.01 and value else f"{value:.4g}"
        return "" if value is None else str(value)

    cells = [[cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def write_summary(rows: list, tune_dir: str, details: dict) -> dict:
    """Writes `summary.csv` and `summary.json` into `tune_dir`; returns their paths."""
    csv_path, json_path = os.path.join(tune_dir, "summary.csv"), os.path.join(tune_dir, "summary.json")
    tmp = f"{csv_path}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, csv_path)
    kc_callbacks.atomic_write_text(json_path, json.dumps({**details, "trials": rows}, indent=2))
    return {"summary_csv": csv_path, "summary_json": json_path}


def write_best_flagfile(config: Config, path: str, comment_lines) -> str:
    """`config` as a self-contained flagfile that `bin/train --flagfile=<path>` accepts as it is."""
    header = [f"# bin/train --flagfile={path}", *(f"# {line}" for line in comment_lines)]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    kc_callbacks.atomic_write_text(path, "\n".join(header) + "\n" + config.to_flagfile())
    return path


def tune(config: Config, tune_dir: str, tuner: str = "hyperband", max_trials: int = 20, overwrite: bool = False,
         best_flagfile: str = None, save_dir: str = None, verbose=1) -> dict:
    """Runs (or resumes) a search in `tune_dir`, then writes its summary, best flagfile and best model.

    In keras-tuner's distributed mode (KERASTUNER_* variables) the chief only serves the search and
    writes the results at the end; a worker runs trials and returns the ids of those it ran.

    Returns:
        The role, the trial rows (best first), the best trial and the paths written.
    """
    check_arguments(config, tuner, max_trials)
    tune_dir = os.path.abspath(tune_dir)
    role = distributed_role()
    fingerprint = search_fingerprint(config, tuner)
    if role != "worker":
        check_tune_dir(tune_dir, fingerprint, overwrite)
    hypermodel = CaptchaHyperModel(config, verbose=verbose)
    # A worker never deletes the shared folder: only the chief (or a single process) may --overwrite.
    kt_tuner = build_tuner(tuner, hypermodel, tune_dir, max_trials, overwrite=overwrite and role != "worker")
    if role == "worker":
        kt_tuner.oracle.get_space()  # waits for the chief, which writes its search file before serving
        check_tune_dir(tune_dir, fingerprint, worker=True)
    else:
        os.makedirs(tune_dir, exist_ok=True)  # --overwrite has just deleted it
        kc_callbacks.atomic_write_text(os.path.join(tune_dir, SEARCH_FILE), json.dumps(fingerprint, indent=2))
    tensorboard = keras.callbacks.TensorBoard(os.path.join(tune_dir, "logs"), update_freq="epoch",
                                              profile_batch=0)
    kt_tuner.search(callbacks=[tensorboard], verbose=verbose)
    if role == "worker":
        return {"role": role, "tuner_id": kt_tuner.tuner_id, "trials_run": getattr(kt_tuner, "trials_run", [])}

    rows = trial_rows(kt_tuner, config)
    best_trials = kt_tuner.oracle.get_best_trials(1)
    details = {"tuner": tuner, "objective": OBJECTIVE.name, "tune_dir": tune_dir, "max_trials": max_trials,
               "fingerprint": fingerprint["fingerprint"]}
    result = {"role": role, **details, "trials": rows, **write_summary(rows, tune_dir, details)}
    if not best_trials or best_trials[0].status != "COMPLETED":
        raise RuntimeError(f"No trial of the search in {tune_dir} completed; the trial_*/trial.json files "
                           "hold each trial's error message.")
    best = best_trials[0]
    best_config = config_from_hyperparameters(config, best.hyperparameters.copy()).validate()
    best_row = next(r for r in rows if r["trial"] == best.trial_id)
    result["best"] = best_row
    tuned = ", ".join(f"{name}={best.hyperparameters.get(name)}" for name in HYPERPARAMETERS)
    if best_flagfile:
        result["best_flagfile"] = write_best_flagfile(best_config, best_flagfile, [
            f"Best of {len(rows)} trials of a {tuner} search in {tune_dir}:",
            f"trial {best.trial_id}, {OBJECTIVE.name}={best_row['val_image_accuracy']}.",
            f"Tuned: {tuned}.",
        ])
    if save_dir:
        with warnings.catch_warnings():
            # The trial checkpoint also holds Adam's slots, which a fresh model's unbuilt optimizer skips.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model = kt_tuner.get_best_models(1)[0]
        model.optimizer.build(model.trainable_variables)  # else loading the saved model warns the same way
        metrics = {name: round(float(best.metrics.get_last_value(name)), 5)
                   for name in best.metrics.metrics if name.startswith("val_")}
        summary = {
            "steps": best_row["steps"],
            "wall_seconds": best_row["seconds"],
            "best_step": int(best.metrics.get_last_value("step")) if best.metrics.exists("step") else None,
            "data": "synthetic (on the fly)" if config.uses_synthetic_data else config.train_dir,
            "tuning": {"tuner": tuner, "trial": best.trial_id, "trials": len(rows), "tune_dir": tune_dir},
        }
        result["saved_to"] = saving.save_model_folder(model, saving.build_metadata(best_config, summary, metrics),
                                                      save_dir)
    return result
