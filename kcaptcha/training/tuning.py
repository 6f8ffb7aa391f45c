"""keras-tuner sweeps: the search space, the hypermodel, the tuner factory and the results of a search.

Each trial maps its `hp.*` values onto a `Config` and then trains exactly as `bin/train` does: the same
`build_model`, learning-rate schedule, data pipeline and early stop on whole-image accuracy.
"""

import hashlib
import importlib.util
import json
import os
import socket
import time

import keras
import keras_tuner

from kcaptcha import files, models
from kcaptcha.config import Config
from kcaptcha.export import saving
from kcaptcha.training import search, train, transfer
from kcaptcha.training.resolve import resolve

TUNERS = ("hyperband", "random", "bayesian")
OBJECTIVE = keras_tuner.Objective(train.MONITOR, direction="max")
TRAINING_HYPERPARAMETERS = ("learning_rate", "batch_size", "augment")


def tunable_architectures():
    return [name for name, entry in models.ARCHITECTURES.items() if entry.tunable]


def search_changes(base: Config, hp: keras_tuner.HyperParameters) -> dict:
    """The search space: reads every `hp.*` value and returns the Config fields a trial changes.

    The architecture is a choice among the tunable ones (starting from `base`'s); each architecture's own
    hyperparameters (its module's `search_space`) are active only when it is chosen.
    """
    names = tunable_architectures()
    default = base.architecture if base.architecture in names else names[0]
    architecture = hp.Choice("architecture", names, default=default)
    changes = {"architecture": architecture}
    for name in names:
        with hp.conditional_scope("architecture", [name]):
            part = models.get(name).load().search_space(hp if name == architecture else _Defaults(hp), base)
        if name == architecture:
            changes.update(part)
    changes["learning_rate"] = float(hp.Float("learning_rate", 3e-4, 1e-2, sampling="log", default=2e-3))
    changes["batch_size"] = hp.Choice("batch_size", [32, 64, 128, 256], default=64)
    changes["augment"] = round(hp.Float("augment", 0.0, 1.0, step=0.25, default=0.5), 4)
    return changes


class _Defaults:
    """Registers an inactive architecture's hyperparameters (keras-tuner then returns None) and hands its
    search space their defaults, so that every architecture's space is declared in every trial."""

    def __init__(self, hp):
        self.hp = hp

    def __getattr__(self, kind):
        def register(name, *args, **kwargs):
            value = getattr(self.hp, kind)(name, *args, **kwargs)
            return value if value is not None else kwargs.get("default")
        return register


def config_from_hyperparameters(base: Config, hp: keras_tuner.HyperParameters) -> Config:
    return base.replace(**search_changes(base, hp))


def tuned_fields(base: Config) -> tuple:
    """The Config fields a search sets (those of every tunable architecture, and the training ones)."""
    fields = {"architecture", *TRAINING_HYPERPARAMETERS}
    for name in tunable_architectures():
        hp = keras_tuner.HyperParameters()
        fields.update(models.get(name).load().search_space(hp, base))
    return tuple(sorted(fields))


def num_epochs(config: Config) -> int:
    """Validations in a full run: one Keras epoch is `eval_every_steps` steps, as in `bin/train`."""
    return -(-config.max_steps // config.eval_every_steps)


class CaptchaHyperModel(keras_tuner.HyperModel):
    """Builds and fits the `bin/train` model for the `Config` a trial's hyperparameters give."""

    def __init__(self, base_config: Config, verbose=1):
        super().__init__(name="kcaptcha")
        self.base_config = base_config
        self.verbose = verbose
        self.last_fit = {}

    def build(self, hp):
        config = config_from_hyperparameters(self.base_config, hp)
        model = models.new_model(config)
        self.initialized_from = None
        if config.init_from:  # as bin/train starts: the base model's weights wherever they fit this trial's model
            self.initialized_from = transfer.copy_weights(model, config.init_from, config.charset)
        return model

    def fit(self, hp, model, *args, **kwargs):
        # The batch size is tuned, so the data pipeline is built here, per trial.
        config = config_from_hyperparameters(self.base_config, hp)
        sets, train_files = train.evaluation_sets(config)
        with train.training_data(config, train_files) as (batches, pool):
            result = train.fit(model, config, batches, sets, pool=pool,
                               callbacks=kwargs.pop("callbacks", []),  # the tuner's: best-epoch checkpoint, logs
                               epochs=kwargs.pop("epochs", num_epochs(config)),  # Hyperband passes its budget
                               initial_epoch=kwargs.pop("initial_epoch", 0), verbose=self.verbose)
        self.last_fit = {"architecture": config.architecture, "conv_filters": list(config.conv_filters),
                         "parameters": int(model.count_params()), "steps": result["steps"],
                         "fit_seconds": result["fit_seconds"], "stop_reason": result["stop_reason"],
                         "initialized_from": getattr(self, "initialized_from", None)}
        return model.history


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
            files.atomic_write_text(path, json.dumps(record, indent=2))
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
    if config.architecture not in tunable_architectures():
        raise ValueError(f"architecture must be one with a search space ({', '.join(tunable_architectures())}); "
                         f"legacy is the parent's fixed network. Received: architecture={config.architecture!r}")
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
    untuned = set(Config.field_names()) - set(Config.field_names("run")) - set(tuned_fields(config))
    fixed = {k: v for k, v in config.subset().items() if k in untuned}
    described = {"tuner": tuner, "space": space, "config": json.loads(json.dumps(fixed))}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]
    return {"fingerprint": digest, **described}


def trial_rows(kt_tuner, base_config: Config) -> list:
    """One summary row per trial, best first: hyperparameters, score, parameters, time and worker."""
    rows = []
    names = sorted({name for trial in kt_tuner.oracle.trials.values() for name in search.active_values(trial)})
    for trial_id, trial in sorted(kt_tuner.oracle.trials.items()):
        hp = trial.hyperparameters.copy()
        config = config_from_hyperparameters(base_config, hp)
        records = search.run_records(kt_tuner.get_trial_dir(trial_id))
        record = records[-1] if records else {}  # the latest run, should a trial ever have been retried
        rows.append({
            "trial": trial_id,
            "status": trial.status,
            **{name: search.active_values(trial).get(name) for name in names},
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


def tune(config: Config, tune_dir: str, tuner: str = "hyperband", max_trials: int = 20, overwrite: bool = False,
         best_flagfile: str = None, save_dir: str = None, verbose=1, given=None) -> dict:
    """Runs (or resumes) a search in `tune_dir`, then writes its summary, best flagfile and best model.

    The run is resolved first, as `train()` resolves it (`kcaptcha.training.resolve`; `given` as there): the
    base model of `init_from` and the training folder decide what was not given, and every trial starts
    from the base model's weights wherever they fit.

    In keras-tuner's distributed mode (KERASTUNER_* variables) the chief only serves the search and
    writes the results at the end; a worker runs trials and returns the ids of those it ran.

    Returns:
        The role, the trial rows (best first), the best trial and the paths written.
    """
    config, notes = resolve(config, given)
    if verbose:
        for note in notes:
            print(note, flush=True)
    check_arguments(config, tuner, max_trials)
    tune_dir = os.path.abspath(tune_dir)
    role = distributed_role()
    fingerprint = search_fingerprint(config, tuner)
    if role != "worker":
        search.check_tune_dir(tune_dir, fingerprint, overwrite)
    hypermodel = CaptchaHyperModel(config, verbose=verbose)
    # A worker never deletes the shared folder: only the chief (or a single process) may --overwrite.
    kt_tuner = build_tuner(tuner, hypermodel, tune_dir, max_trials, overwrite=overwrite and role != "worker")
    if role == "worker":
        kt_tuner.oracle.get_space()  # waits for the chief, which writes its search file before serving
        search.check_tune_dir(tune_dir, fingerprint, worker=True)
    else:
        os.makedirs(tune_dir, exist_ok=True)  # --overwrite has just deleted it
        files.atomic_write_json(os.path.join(tune_dir, search.SEARCH_FILE), fingerprint)
    tensorboard = keras.callbacks.TensorBoard(os.path.join(tune_dir, "logs"), update_freq="epoch",
                                              profile_batch=0)
    kt_tuner.search(callbacks=[tensorboard], verbose=verbose)
    if role == "worker":
        return {"role": role, "tuner_id": kt_tuner.tuner_id, "trials_run": getattr(kt_tuner, "trials_run", [])}
    details = {"role": role, "tuner": tuner, "objective": OBJECTIVE.name, "tune_dir": tune_dir,
               "max_trials": max_trials, "fingerprint": fingerprint["fingerprint"]}
    return write_results(kt_tuner, config, details, best_flagfile, save_dir, overwrite)


def write_results(kt_tuner, config: Config, details: dict, best_flagfile=None, save_dir=None,
                  overwrite: bool = False) -> dict:
    """The summary table and files, the best trial's flagfile and its model (when asked for)."""
    rows = trial_rows(kt_tuner, config)
    result = {**details, "trials": rows, **search.write_summary(rows, details["tune_dir"], details)}
    best_trials = kt_tuner.oracle.get_best_trials(1)
    if not best_trials or best_trials[0].status != "COMPLETED":
        raise RuntimeError(f"No trial of the search in {details['tune_dir']} completed; the trial_*/trial.json "
                           "files hold each trial's error message.")
    best = best_trials[0]
    best_config = config_from_hyperparameters(config, best.hyperparameters.copy()).validate()
    result["best"] = best_row = next(r for r in rows if r["trial"] == best.trial_id)
    if best_flagfile:
        tuned = ", ".join(f"{name}={value}" for name, value in search.active_values(best).items())
        result["best_flagfile"] = search.write_best_flagfile(best_config, best_flagfile, [
            f"Best of {len(rows)} trials of a {details['tuner']} search in {details['tune_dir']}:",
            f"trial {best.trial_id}, {OBJECTIVE.name}={best_row['val_image_accuracy']}.",
            f"Tuned: {tuned}.",
        ])
    if save_dir:
        result["saved_to"] = save_best_model(kt_tuner, best, best_config, best_row, details, save_dir, overwrite)
    return result


def save_best_model(kt_tuner, best, best_config: Config, best_row: dict, details: dict, save_dir: str,
                    overwrite: bool) -> str:
    # new_model builds the optimizer, so the trial's checkpoint loads whole, unwarned; the folder saves the network.
    model = kt_tuner.get_best_models(1)[0]
    metrics = {name: round(float(best.metrics.get_last_value(name)), 5)
               for name in best.metrics.metrics if name.startswith("val_")}
    summary = {
        "steps": best_row["steps"],
        "wall_seconds": best_row["seconds"],
        "best_step": int(best.metrics.get_last_value("step")) if best.metrics.exists("step") else None,
        "data": best_config.train_dir or "synthetic (on the fly)",
        "tuning": {"tuner": details["tuner"], "trial": best.trial_id, "tune_dir": details["tune_dir"]},
    }
    return saving.save_model_folder(model, saving.build_metadata(best_config, summary, metrics), save_dir,
                                    run_id=f"tune-{details['fingerprint']}", overwrite=overwrite)
