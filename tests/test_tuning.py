"""kcaptcha.training.tuning and bin/tune: the pinned search space, a real 2-trial search, bad input, distribution."""

import csv
import glob
import importlib.util
import json
import os
import subprocess
import sys
import time

import keras
import keras_tuner
import pytest

from kcaptcha import models
from kcaptcha.config import Config
from kcaptcha.export import saving
from kcaptcha.flags import parse_flagfile
from kcaptcha.training import search as search_files
from kcaptcha.training import train, tuning
from tests.ports import free_local_ports

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISTRIBUTED_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


@pytest.fixture
def smoke_config(monkeypatch):
    monkeypatch.chdir(REPO)  # nested flagfile paths resolve from the working directory
    for name in DISTRIBUTED_ENV:
        monkeypatch.delenv(name, raising=False)
    return parse_flagfile("experiments/smoke.flags")


def describe(hyperparameter):
    config = hyperparameter.get_config()
    if "values" in config:
        return type(hyperparameter).__name__, tuple(config["values"]), config["default"]
    return (type(hyperparameter).__name__, config["min_value"], config["max_value"], config.get("step"),
            config.get("sampling"), config["default"])


def test_search_space_is_pinned():
    hp = keras_tuner.HyperParameters()
    config = tuning.config_from_hyperparameters(Config(), hp)
    assert {h.name: describe(h) for h in hp.space} == {
        "architecture": ("Choice", ("ctc", "heads"), "ctc"),
        "ctc_conv_blocks": ("Int", 3, 5, 1, "linear", 4),
        "ctc_extra_blocks": ("Int", 0, 2, 1, "linear", 0),
        "ctc_width_multiplier": ("Choice", (0.5, 1.0, 1.5, 2.0), 1.0),
        "context": ("Choice", ("conv", "gru", "none"), "conv"),
        "ctc_dropout_rate": ("Float", 0.0, 0.5, 0.05, "linear", 0.25),
        "conv_blocks": ("Int", 2, 5, 1, "linear", 4),
        "width_multiplier": ("Choice", (0.5, 0.75, 1.0, 1.5), 1.0),
        "dropout_rate": ("Float", 0.0, 0.5, 0.05, "linear", 0.25),
        "head_units": ("Choice", (0, 128, 256, 512), 0),
        "learning_rate": ("Float", 3e-4, 1e-2, None, "log", 2e-3),
        "batch_size": ("Choice", (32, 64, 128, 256), 64),
        "augment": ("Float", 0.0, 1.0, 0.25, "linear", 0.5),
    }
    # The defaults are exactly Config's defaults: the first point of the space is the untuned model.
    assert config == Config()


def test_hyperparameters_map_onto_the_config(smoke_config):
    hp = keras_tuner.HyperParameters()
    hp.Fixed("architecture", "heads")
    hp.Fixed("conv_blocks", 3)
    hp.Fixed("width_multiplier", 0.5)
    hp.Fixed("batch_size", 32)
    config = tuning.config_from_hyperparameters(smoke_config, hp)
    assert config.architecture == "heads" and config.conv_filters == (12, 24, 48)
    assert config.batch_size == 32
    assert (config.charset, config.width, config.max_steps) == ("0123", 48, 20)  # untuned fields kept
    model = tuning.CaptchaHyperModel(smoke_config).build(keras_tuner.HyperParameters())
    assert model.output_shape == (None, 12, 5) and model.optimizer is not None  # ctc: 12 frames, 4 + blank
    hp = keras_tuner.HyperParameters()
    hp.Fixed("ctc_extra_blocks", 2)
    assert tuning.config_from_hyperparameters(smoke_config, hp).extra_blocks == 2
    deeper = tuning.CaptchaHyperModel(smoke_config).build(hp)
    assert deeper.get_layer("extra2_add") is not None and model.count_params() < deeper.count_params()


def test_bad_arguments_are_refused(smoke_config, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="tuner must be one of hyperband, random, bayesian"):
        tuning.tune(smoke_config, str(tmp_path), tuner="grid")
    with pytest.raises(ValueError, match="max_trials must be at least 1. Received: max_trials=0"):
        tuning.tune(smoke_config, str(tmp_path), tuner="random", max_trials=0)
    with pytest.raises(ValueError, match="architecture must be one with a search space"):
        tuning.tune(smoke_config.replace(architecture="legacy"), str(tmp_path), tuner="random")
    with pytest.raises(ValueError, match="charset has repeated"):
        tuning.tune(smoke_config.replace(charset="00"), str(tmp_path), tuner="random")
    if importlib.util.find_spec("sklearn") is None:
        with pytest.raises(ValueError, match="tuner=bayesian needs scipy and scikit-learn"):
            tuning.tune(smoke_config, str(tmp_path), tuner="bayesian")
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    with pytest.raises(ValueError, match="KERASTUNER_ORACLE_PORT is not"):
        tuning.tune(smoke_config, str(tmp_path), tuner="random")
    assert os.listdir(tmp_path) == []


def test_a_folder_from_a_different_search_is_refused(smoke_config, tmp_path):
    search = tmp_path / "search"
    search.mkdir()
    (search / search_files.SEARCH_FILE).write_text(json.dumps(tuning.search_fingerprint(smoke_config, "random")))
    with pytest.raises(ValueError, match=r"different search \(tuner 'random' -> 'hyperband'\).*--overwrite"):
        tuning.tune(smoke_config, str(search), tuner="hyperband", max_trials=1)
    with pytest.raises(ValueError, match=r"different search \(charset '0123' -> '01'\)"):
        tuning.tune(smoke_config.replace(charset="01"), str(search), tuner="random", max_trials=1)
    other = tmp_path / "other"
    other.mkdir()
    (other / "oracle.json").write_text("{}")
    with pytest.raises(ValueError, match="not a kcaptcha search"):
        tuning.tune(smoke_config, str(other), tuner="random", max_trials=1)


def run_cli(*args, env=None, timeout=120, **kwargs):
    return subprocess.run([sys.executable, os.path.join("bin", "tune"), *args], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=timeout, **kwargs)


def test_cli_explains_bad_input(tmp_path):
    bad = tmp_path / "bad.flags"
    bad.write_text("--flagfile=experiments/smoke.flags\n--charset=00\n")
    cases = [
        ([f"--flagfile={bad}"], "charset has repeated characters '0'"),
        (["--flagfile=experiments/smoke.flags", "--tuner=grid"], "value should be one of <hyperband|random|bayesian>"),
        (["--flagfile=experiments/smoke.flags", "--max_trials=0"], "--max_trials=0: 0 is not a positive integer"),
    ]
    for args, message in cases:
        result = run_cli(*args, f"--tune_dir={tmp_path / 'search'}")
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
    assert not (tmp_path / "search").exists()


def read_trials(search_dir):
    """(trial.json contents, run records) of every trial folder."""
    trials = []
    for folder in sorted(glob.glob(os.path.join(search_dir, "trial_*"))):
        with open(os.path.join(folder, "trial.json"), encoding="utf-8") as f:
            trial = json.load(f)
        runs = []
        for path in glob.glob(os.path.join(folder, search_files.RUN_FILE_PATTERN)):
            with open(path, encoding="utf-8") as f:
                runs.append(json.load(f))
        trials.append((trial, runs))
    return trials


@pytest.mark.slow
@pytest.mark.filterwarnings("error:Skipping variable loading for optimizer")  # the best trial loads whole
def test_two_trial_search_resumes_and_its_best_flagfile_trains(smoke_config, tmp_path):
    search = str(tmp_path / "search")
    outputs = dict(best_flagfile=str(tmp_path / "smoke.best.flags"), save_dir=str(tmp_path / "smoke.best"),
                   verbose=0)
    first = tuning.tune(smoke_config, search, tuner="random", max_trials=1, **outputs)
    assert [row["trial"] for row in first["trials"]] == ["0"]
    first_runs = {t["trial_id"]: runs for t, runs in read_trials(search)}

    # Re-running continues the search: trial 0 is kept as it was, trial 1 is new.
    result = tuning.tune(smoke_config, search, tuner="random", max_trials=2, **outputs)
    assert sorted(row["trial"] for row in result["trials"]) == ["0", "1"]
    assert [row["status"] for row in result["trials"]] == ["COMPLETED", "COMPLETED"]
    assert {t["trial_id"]: runs for t, runs in read_trials(search)}["0"] == first_runs["0"]
    with open(result["summary_csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {"trial", "val_image_accuracy", "parameters", "seconds", "batch_size"} <= set(rows[0])
    with open(result["summary_json"]) as f:
        assert len(json.load(f)["trials"]) == 2
    best = result["best"]
    assert best["val_image_accuracy"] == max(row["val_image_accuracy"] for row in result["trials"])

    best_config = parse_flagfile(result["best_flagfile"])
    assert best_config.conv_filters == tuple(int(f) for f in best["conv_filters"].split(","))
    assert (best_config.batch_size, best_config.learning_rate) == (best["batch_size"], best["learning_rate"])
    assert best_config.replace(**{f: getattr(smoke_config, f) for f in tuning.tuned_fields(smoke_config)}) \
        == smoke_config
    metadata = saving.read_metadata(result["saved_to"])
    assert Config.from_dict(metadata["config"]) == best_config
    assert metadata["metrics"]["val_image_accuracy"] == best["val_image_accuracy"]
    model = keras.models.load_model(os.path.join(result["saved_to"], saving.MODEL_FILE))
    assert model.output_shape == models.new_model(best_config).output_shape

    # The best flagfile trains as it is.
    summary = train.train(best_config, str(tmp_path / "run"), verbose=0)
    assert Config.from_json((tmp_path / "run" / "config.json").read_text()) == best_config  # as it is
    assert summary["steps"] == best_config.max_steps or summary["stop_reason"] == "target_accuracy"
    best_row = train.best_row(str(tmp_path / "run" / "history.csv"))
    assert summary["best_step"] == best_row["step"]
    assert summary["metrics"]["val_image_accuracy"] == pytest.approx(best_row[train.MONITOR], abs=1e-5)


def test_overwrite_restarts_with_hyperband(smoke_config, tmp_path):
    search = tmp_path / "search"
    search.mkdir()
    (search / search_files.SEARCH_FILE).write_text(json.dumps(tuning.search_fingerprint(smoke_config, "random")))
    (search / "trial_7").mkdir()
    result = tuning.tune(smoke_config, str(search), tuner="hyperband", max_trials=1, overwrite=True, verbose=0)
    assert [row["status"] for row in result["trials"]] == ["COMPLETED"]
    assert not (search / "trial_7").exists()
    assert "best_flagfile" not in result and "saved_to" not in result


def test_trials_obey_the_training_time_limit(smoke_config, tmp_path):
    """Each trial trains through the same fit as bin/train, so max_train_seconds stops it too."""
    config = smoke_config.replace(max_steps=600, max_train_seconds=2, eval_every_steps=600, patience=100)
    result = tuning.tune(config, str(tmp_path / "search"), tuner="random", max_trials=1, verbose=0)
    (trial, runs), = read_trials(str(tmp_path / "search"))
    assert runs[0]["stop_reason"] == "max_train_seconds" and 0 < runs[0]["steps"] < 600
    assert result["trials"][0]["status"] == "COMPLETED"


def test_search_fingerprint_ignores_run_fields_only(smoke_config):
    base = tuning.search_fingerprint(smoke_config, "random")["fingerprint"]
    for field in Config.field_names("run"):
        changed = smoke_config.replace(**{field: getattr(Config(), field)})
        assert tuning.search_fingerprint(changed, "random")["fingerprint"] == base, field
    assert tuning.search_fingerprint(smoke_config.replace(max_train_seconds=5), "random")["fingerprint"] != base
    assert tuning.search_fingerprint(smoke_config.replace(learning_rate=0.1), "random")["fingerprint"] == base


@pytest.mark.slow
def test_chief_and_two_workers_share_one_search(tmp_path):
    search = tmp_path / "search"
    args = ["--flagfile=experiments/smoke.flags", "--tuner=random", "--max_trials=3", f"--tune_dir={search}",
            f"--best_flagfile={tmp_path / 'best.flags'}", f"--save_dir={tmp_path / 'best'}"]
    port = free_local_ports(1)[0]
    processes, logs = {}, {}
    try:
        # Workers first: they wait for the chief, so none can miss a search that has already ended.
        for tuner_id in ("tuner0", "tuner1", "chief"):
            env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1",
                   "KERASTUNER_ORACLE_PORT": str(port)}
            logs[tuner_id] = open(tmp_path / f"{tuner_id}.log", "w")
            processes[tuner_id] = subprocess.Popen(
                [sys.executable, os.path.join("bin", "tune"), *args], cwd=REPO, env=env,
                stdout=logs[tuner_id], stderr=subprocess.STDOUT)
        deadline = time.time() + 400
        for process in processes.values():
            process.wait(timeout=max(1, deadline - time.time()))
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs.values():
            log.close()
    output = {t: (tmp_path / f"{t}.log").read_text()[-3000:] for t in processes}
    assert all(p.returncode == 0 for p in processes.values()), output

    trials = read_trials(search)
    assert len(trials) == 3, output
    assert len({t["trial_id"] for t, _ in trials}) == 3
    assert all(t["status"] == "COMPLETED" for t, _ in trials)
    values = [json.dumps(t["hyperparameters"]["values"], sort_keys=True) for t, _ in trials]
    assert len(set(values)) == 3, values
    for trial, runs in trials:  # run exactly once, by one worker, never by the chief
        assert [r["tuner_id"] for r in runs] in (["tuner0"], ["tuner1"]), (trial["trial_id"], runs)
    with open(search / "summary.json") as f:
        assert len(json.load(f)["trials"]) == 3
    parse_flagfile(str(tmp_path / "best.flags"))


@pytest.mark.slow
def test_bin_tune_on_a_folder_starts_from_init_from_and_takes_the_folder_defaults(smoke_config, tmp_path):
    """bin/tune resolves the run as bin/train does: the base model's fields and weights, the folder's task."""
    from tests.conftest import write_captchas

    smoke_model_dir = str(tmp_path / "base")
    train.train(smoke_config.replace(max_steps=10, eval_every_steps=10), str(tmp_path / "base_run"),
                save_dir=smoke_model_dir, verbose=0)
    write_captchas(str(tmp_path / "raw"), smoke_config, 24)
    result = run_cli(f"--train_dir={tmp_path / 'raw'}", f"--init_from={smoke_model_dir}", "--tuner=random",
                     "--max_trials=1", "--max_steps=4", "--batch_size=8", "--pool_size=64", "--val_size=16",
                     f"--tune_dir={tmp_path / 'search'}", f"--best_flagfile={tmp_path / 'best.flags'}",
                     f"--save_dir={tmp_path / 'best'}", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Starting from {smoke_model_dir}" in result.stdout and "24 labelled images in" in result.stdout
    (trial, runs), = read_trials(str(tmp_path / "search"))
    assert runs[0]["initialized_from"]["model"] == os.path.abspath(smoke_model_dir)
    assert runs[0]["initialized_from"]["layers_copied"] > 0
    best = parse_flagfile(str(tmp_path / "best.flags"))  # the resolved task is what the search recorded
    assert (best.charset, best.width, best.height, best.style) == ("0123", smoke_config.width, smoke_config.height,
                                                                   "varied")
