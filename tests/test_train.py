import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile

import h5py
import keras
import numpy as np
import pytest

from kcaptcha import models
from kcaptcha.export import saving
from kcaptcha.reading import metrics
from kcaptcha.training.train import train


def history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def backup_step(run_dir):
    """The step of the run's Keras backup, read by restoring it into a fresh model."""
    from kcaptcha.config import Config
    from kcaptcha.training.train import restore

    config = Config.from_json(open(os.path.join(run_dir, "config.json")).read())
    return restore(models.new_model(config), run_dir)


@pytest.mark.parametrize("architecture", ["heads", "legacy"])
def test_positional_architectures_give_logits_per_position(smoke_config, architecture):
    config = smoke_config.replace(architecture=architecture)
    model = models.new_model(config)
    assert model.output_shape == (None, config.max_length, len(config.charset))
    variable = config.replace(min_length=1, max_length=3)
    assert models.new_model(variable).output_shape == (None, 3, len(variable.charset) + 1)


def test_scores_count_whole_images_and_characters_by_edit_distance():
    truths, readings = ["0123", "0123", "0123", "01"], ["0123", "0124", "123", "012"]
    assert metrics.image_accuracy(truths, readings) == 0.25
    # edits: 0 + 1 (substitution) + 1 (deletion) + 1 (insertion) over 14 true characters
    assert metrics.character_accuracy(truths, readings) == pytest.approx(1 - 3 / 14)
    assert metrics.edit_distance("kitten", "sitting") == 3


def test_train_saves_model_metadata_logs_and_curves(tmp_path, smoke_config):
    summary = train(smoke_config, str(tmp_path / "run"), save_dir=str(tmp_path / "model"), verbose=0)
    assert summary["steps"] == smoke_config.max_steps and summary["stop_reason"] == "max_steps"
    run = tmp_path / "run"
    assert (run / "learning_curves.png").stat().st_size > 1000
    rows = history(run)
    assert [int(float(r["step"])) for r in rows] == [10, 20]
    assert {"val_image_accuracy", "val_character_accuracy", "wall_seconds", "loss"} <= set(rows[0])
    # The validation loss, and its running average that the plateau stop watches.
    first, second = ({k: float(r[k]) for k in ("val_loss", "val_loss_ema")} for r in rows)
    assert first["val_loss"] > 0 and first["val_loss_ema"] == pytest.approx(first["val_loss"])
    assert second["val_loss_ema"] == pytest.approx(0.7 * first["val_loss"] + 0.3 * second["val_loss"], rel=1e-5)
    assert any((run / "logs").rglob("*tfevents*"))
    metadata = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert metadata["charset"] == smoke_config.charset and metadata["architecture"] == "ctc"
    assert metadata["output"] == "ctc" and metadata["training"]["steps"] == smoke_config.max_steps
    best = max(rows, key=lambda r: float(r["val_image_accuracy"]))
    assert metadata["metrics"]["val_image_accuracy"] == pytest.approx(float(best["val_image_accuracy"]), abs=1e-5)
    assert "fonts" not in metadata["training"]  # the captcha library's own font


def test_the_fonts_found_for_varied_synthetic_captchas_are_recorded(smoke_config):
    """Another machine finds other fonts, and draws other captchas from the same seed: say which were used."""
    from kcaptcha.training import train as train_module
    from kcaptcha.data.styles import find_fonts

    varied = smoke_config.replace(style="varied")
    names = train_module._synthetic_fonts(varied)["fonts"]
    assert names and names == [os.path.basename(path) for path in find_fonts(smoke_config.charset)]
    assert train_module._synthetic_fonts(varied.replace(train_dir="/some/folder")) == {}


def test_validation_scores_are_what_evaluate_computes(tmp_path, smoke_config):
    """The logged val_image_accuracy is the saved model's accuracy on the same images, read by a Recognizer."""
    import kcaptcha
    from kcaptcha.data import pipeline as data

    config = smoke_config.replace(max_steps=30, eval_every_steps=30)
    summary = train(config, str(tmp_path / "run"), save_dir=str(tmp_path / "model"), verbose=0)
    validation = data.synthetic_set(config, config.val_size, data.validation_seed(config))
    readings = [p.text for p in kcaptcha.load_model(summary["saved_to"], tta=0).predict(list(validation.images))]
    expected = metrics.scores(validation.labels, readings)
    assert summary["metrics"]["val_image_accuracy"] == pytest.approx(expected["image_accuracy"], abs=1e-4)
    assert summary["metrics"]["val_character_accuracy"] == pytest.approx(expected["character_accuracy"], abs=1e-4)


def test_a_plateau_of_validation_accuracy_and_loss_stops_training_and_says_why(smoke_config):
    from kcaptcha.training.callbacks import PlateauStop

    model = models.new_model(smoke_config)
    stop = PlateauStop(patience=3, min_step=50)
    stop.set_model(model)

    def validate(step, accuracy, loss):
        model.optimizer.iterations.assign(step)
        stop.on_epoch_end(0, {"val_image_accuracy": accuracy, "val_loss_ema": loss})
        return model.stop_training

    assert not validate(10, 0.5, 2.0)
    assert not validate(20, 0.5, 1.995)  # 0.25% lower: not an improvement
    assert not validate(30, 0.5, 1.9)  # 5% lower: it is, the count starts again
    assert not any(validate(step, 0.5, 1.9) for step in (40, 50))
    assert validate(60, 0.5, 1.9) and "no better validation accuracy or loss for 3 validations" in stop.reached
    model.stop_training, late = False, PlateauStop(patience=1, min_step=100)
    late.set_model(model)
    for step in (70, 80, 90):
        model.optimizer.iterations.assign(step)
        late.on_epoch_end(0, {"val_image_accuracy": 0.5, "val_loss_ema": 1.9})
    assert not model.stop_training  # not before min_step, however flat
    model.optimizer.iterations.assign(100)
    late.on_epoch_end(0, {"val_image_accuracy": 0.5, "val_loss_ema": 1.9})
    assert model.stop_training


def test_target_accuracy_stops_early(tmp_path, smoke_config):
    # A 2-character, 4-symbol task: after one validation the heads model reads some of the 64 images right.
    config = smoke_config.replace(architecture="heads", target_accuracy=0.001, max_steps=100)
    summary = train(config, str(tmp_path / "run"), verbose=0)
    assert summary["stop_reason"] == "target_accuracy"
    assert summary["steps"] == config.eval_every_steps
    assert summary["metrics"]["val_image_accuracy"] >= 0.001
    assert "warning" not in summary  # it reads: nothing to warn about


def test_of_equal_validation_scores_the_later_model_is_kept(tmp_path, smoke_config):
    """A small validation set reads 1.0 (or 0.95) from the first steps on; Keras kept the first of equal
    scores, a barely trained model. The checkpoint and the summary keep the last."""
    from PIL import Image

    from kcaptcha.training.train import AtomicModelCheckpoint, best_row
    from tests.conftest import write_captchas

    # a real fit whose validation ties at every step: one blank image under each of the 16 labels, which
    # any model reads alike, so exactly one of the 16 is right whatever it has learnt
    write_captchas(str(tmp_path / "train"), smoke_config, 40)
    os.makedirs(tmp_path / "val")
    for index, label in enumerate(a + b for a in smoke_config.charset for b in smoke_config.charset):
        Image.new("L", (smoke_config.width, smoke_config.height), 255).save(tmp_path / "val" / f"{label}_{index}.png")
    config = smoke_config.replace(train_dir=str(tmp_path / "train"), val_dir=str(tmp_path / "val"), max_steps=30)
    summary = train(config, str(tmp_path / "run"), save_dir=str(tmp_path / "model"), verbose=0)
    scores = [float(row["val_image_accuracy"]) for row in history(tmp_path / "run")]
    assert scores == [1 / 16] * 3 and summary["best_step"] == 30
    assert best_row(str(tmp_path / "run" / "history.csv"))["step"] == 30

    # the checkpoint itself: equal keeps the later weights, lower keeps what it has
    model = models.new_model(smoke_config)
    path = str(tmp_path / "best.keras")
    checkpoint = AtomicModelCheckpoint(path, monitor="val_image_accuracy", mode="max", save_best_only=True)
    checkpoint.set_model(model)
    kept = []
    for epoch, score in enumerate([0.5, 0.5, 0.4]):
        model.set_weights([w + epoch + 1 for w in model.get_weights()])
        if score == 0.5:
            kept = [w.copy() for w in model.get_weights()]
        checkpoint.on_epoch_end(epoch, {"val_image_accuracy": score})
    for saved, expected in zip(keras.models.load_model(path).get_weights(), kept):
        np.testing.assert_allclose(saved, expected)


def test_legacy_model_trains(tmp_path, smoke_config):
    summary = train(smoke_config.replace(architecture="legacy", max_steps=10), str(tmp_path / "run"),
                    save_dir=str(tmp_path / "model"), verbose=0)
    assert json.loads((tmp_path / "model" / "metadata.json").read_text())["output"] == "sigmoid"
    assert summary["steps"] == 10


@pytest.mark.parametrize("synthetic_mix", [-1.0, 0.5])
def test_learns_from_a_folder_of_files_and_scores_a_training_sample(tmp_path, smoke_config, synthetic_mix):
    from tests.conftest import write_captchas

    write_captchas(str(tmp_path / "train"), smoke_config, 40)
    write_captchas(str(tmp_path / "val"), smoke_config, 16, seed=8)
    config = smoke_config.replace(train_dir=str(tmp_path / "train"), val_dir=str(tmp_path / "val"), max_steps=10,
                                  synthetic_mix=synthetic_mix)
    summary = train(config, str(tmp_path / "run"), verbose=0)
    assert summary["steps"] == 10 and summary["data"] == str(tmp_path / "train")
    row = history(tmp_path / "run")[0]
    assert "image_accuracy" in row  # over-fitting shows as train >> val
    # 40 images: by default the folder's own only; asked for, half of each batch from the captcha pool
    assert ("captchas_drawn" in row) == (synthetic_mix > 0)


def test_a_run_reopened_for_more_steps_goes_on_from_where_it_ended_not_its_last_periodic_backup(tmp_path,
                                                                                                smoke_config):
    config = smoke_config.replace(max_steps=30, checkpoint_every_steps=7, eval_every_steps=30)
    train(config, str(tmp_path / "run"), verbose=0)  # periodic backups at 7 to 28, then one at the end
    assert backup_step(str(tmp_path / "run")) == 30
    assert not [p for p in (tmp_path / "run").rglob("*") if ".tmp" in p.name]
    more = train(config.replace(max_steps=36), str(tmp_path / "run"), verbose=0)
    assert more["steps"] == 36 and more["steps_this_run"] == 6  # not 8, from step 28
    assert [int(float(r["step"])) for r in history(str(tmp_path / "run"))] == [30, 36]


def test_a_finished_run_is_not_reopened_by_another_time_cap(tmp_path, smoke_config):
    config = smoke_config.replace(max_steps=30, checkpoint_every_steps=7, eval_every_steps=30)
    run = str(tmp_path / "run")
    assert train(config, run, verbose=0)["steps_this_run"] == 30  # finished at step 30
    again = train(config.replace(max_train_seconds=600), run, verbose=0)
    assert again["steps_this_run"] == 0 and again["steps"] == 30
    # still marked finished: reopened, a run that had stopped on a plateau before max_steps would train on
    assert "finished" in json.loads((tmp_path / "run" / "run.json").read_text())


def test_a_second_training_in_a_run_folder_in_use_is_refused_naming_the_first(tmp_path, smoke_config, repo_root):
    run = tmp_path / "run"
    holder = subprocess.Popen(  # another process training in the folder, as far as the folder's lock tells
        [sys.executable, "-c", "import sys, time\nfrom kcaptcha import files\nwith files.folder_in_use(sys.argv[1]):\n"
         "    print('holding', flush=True)\n    time.sleep(600)", str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(RuntimeError, match=rf"{run} is in use by another training \(process {holder.pid} on "):
            train(smoke_config.replace(max_steps=10), str(run), verbose=0)
        assert not (run / "history.csv").exists() and not (run / "run.json").exists()
        command = [sys.executable, os.path.join(repo_root, "bin", "train"), "--flagfile=experiments/smoke.flags",
                   f"--model_dir={run}", "--max_steps=10"]
        refused = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=300)
        assert refused.returncode != 0 and f"process {holder.pid}" in refused.stderr, refused.stderr[-2000:]
    finally:
        holder.kill()  # killed, not ended: the system drops its lock all the same
        holder.wait()
    assert train(smoke_config.replace(max_steps=10), str(run), verbose=0)["steps_this_run"] == 10


def test_resume_continues_from_the_backup_not_from_scratch(tmp_path, smoke_config):
    run = str(tmp_path / "run")
    first = train(smoke_config.replace(max_steps=20), run, verbose=0)
    weights = keras.models.load_model(os.path.join(run, "best.keras")).get_weights()
    assert first["steps_this_run"] == 20
    summary = train(smoke_config.replace(max_steps=40), run, verbose=0)
    assert summary["steps"] == 40 and summary["steps_this_run"] == 20  # 20 restored + 20 new, not 40 new
    assert [int(float(r["step"])) for r in history(run)] == [10, 20, 30, 40]  # one history, continued
    assert float(history(run)[-1]["wall_seconds"]) >= float(history(run)[1]["wall_seconds"])
    drawn = [float(row["captchas_drawn"]) for row in history(run)]
    assert drawn[2] > drawn[1] + 256  # the resumed run's captcha pool continued the stream where it stopped
    initial = models.new_model(smoke_config).get_weights()  # seeded: the weights the run started from
    assert len(weights) == len(initial) and any(not np.allclose(w, i) for w, i in zip(weights, initial))
    again = train(smoke_config.replace(max_steps=40), run, verbose=0)
    assert again["steps_this_run"] == 0  # a finished run is not trained again
    fresh = train(smoke_config.replace(max_steps=20), run, fresh=True, verbose=0)
    assert fresh["steps_this_run"] == 20 and len(history(run)) == 2


def test_a_different_task_in_the_same_model_dir_is_refused(tmp_path, smoke_config):
    run = str(tmp_path / "run")
    train(smoke_config.replace(max_steps=10), run, verbose=0)
    with pytest.raises(ValueError, match="different charset"):
        train(smoke_config.replace(charset="0123456789", max_steps=10), run, verbose=0)


def test_a_run_saved_before_a_field_was_added_resumes(tmp_path, smoke_config):
    run = tmp_path / "run"
    train(smoke_config.replace(max_steps=10), str(run), verbose=0)
    saved = json.loads((run / "config.json").read_text())
    del saved["extra_blocks"]  # as a run saved before the field existed; it used the default
    (run / "config.json").write_text(json.dumps(saved))
    assert train(smoke_config.replace(max_steps=20), str(run), verbose=0)["steps_this_run"] == 10


def test_never_replaces_a_model_another_run_saved(tmp_path, smoke_config):
    target = str(tmp_path / "model")
    train(smoke_config.replace(max_steps=10), str(tmp_path / "run_a"), save_dir=target, verbose=0)
    before = (tmp_path / "model" / "model.keras").read_bytes()
    with pytest.raises(ValueError, match="never replaced unasked"):
        train(smoke_config.replace(max_steps=10), str(tmp_path / "run_b"), save_dir=target, verbose=0)
    assert (tmp_path / "model" / "model.keras").read_bytes() == before
    assert not (tmp_path / "run_b").exists()  # refused before any training
    train(smoke_config.replace(max_steps=20), str(tmp_path / "run_a"), save_dir=target, verbose=0)  # its own
    train(smoke_config.replace(max_steps=10), str(tmp_path / "run_b"), save_dir=target, overwrite=True, verbose=0)


def test_the_shipped_models_are_protected(repo_root, tmp_path):
    shipped = os.path.join(saving.SHIPPED_MODELS_DIR, "digits")
    before = {name: os.path.getmtime(os.path.join(shipped, name)) for name in os.listdir(shipped)}
    result = subprocess.run([sys.executable, os.path.join(repo_root, "bin", "train"),
                             "--flagfile=experiments/smoke.flags", "--name=digits", f"--model_dir={tmp_path / 'run'}",
                             "--save_dir=kcaptcha/saved_models/digits"], cwd=repo_root, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1 and "shipped model" in result.stderr, result.stderr[-2000:]
    assert {name: os.path.getmtime(os.path.join(shipped, name)) for name in os.listdir(shipped)} == before


def test_a_shipped_model_records_no_path_of_the_machine_it_was_trained_on(smoke_model_dir, tmp_path, monkeypatch):
    """Saved into the shipped folder, a model's metadata names its run and source relative to the repository
    (or by name); saved anywhere else, it keeps the absolute paths that find them on this machine."""
    root = tmp_path / "repo"
    shipped = root / "kcaptcha" / "saved_models"
    monkeypatch.setattr(saving, "SHIPPED_MODELS_DIR", str(shipped))
    model = keras.models.load_model(os.path.join(smoke_model_dir, saving.MODEL_FILE))
    metadata = saving.read_metadata(smoke_model_dir)
    elsewhere = str(tmp_path / "labelled")
    metadata["training"] = {**metadata["training"], "run_dir": str(root / "runs" / "digits"), "data": elsewhere,
                            "initialized_from": {"model": str(shipped / "alnum"), "layers_copied": 3}}
    metadata["config"] = {**metadata["config"], "init_from": str(root / "saved_models" / "first")}

    kept = saving.read_metadata(saving.save_model_folder(model, metadata, str(tmp_path / "mine")))
    assert kept["training"]["run_dir"] == str(root / "runs" / "digits")
    assert kept["training"]["initialized_from"]["model"] == str(shipped / "alnum")

    saved = saving.read_metadata(saving.save_model_folder(model, metadata, str(shipped / "digits")))
    assert saved["training"]["run_dir"] == "runs/digits"
    assert saved["training"]["initialized_from"] == {"model": "alnum", "layers_copied": 3}
    assert saved["config"]["init_from"] == "saved_models/first"
    assert saved["training"]["data"] == elsewhere  # outside the repository: kept as it is
    assert {k: v for k, v in saved.items() if k not in ("training", "config")} == \
        {k: v for k, v in kept.items() if k not in ("training", "config")}


def test_a_saved_model_holds_the_network_not_its_optimizer_state(smoke_model_dir):
    """Adam's slots and the EMA copy made model.keras four times as large, and nothing that reads a saved folder
    uses them: fine-tuning starts a fresh optimizer, and a run resumes from its own checkpoints, which keep them."""
    def groups(path):
        with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as f:
            return set(f)

    checkpoint = os.path.join(os.path.dirname(smoke_model_dir), "run", "best.keras")
    saved = os.path.join(smoke_model_dir, saving.MODEL_FILE)
    assert "optimizer" in groups(checkpoint) and "optimizer" not in groups(saved)
    best, kept = keras.models.load_model(checkpoint), keras.models.load_model(saved)
    best_weights, kept_weights = best.get_weights(), kept.get_weights()
    assert len(best_weights) == len(kept_weights)
    assert all(np.array_equal(a, b) for a, b in zip(best_weights, kept_weights))
    assert (kept.name, kept.input_shape, kept.output_shape) == (best.name, best.input_shape, best.output_shape)
    for name in saving.SHIPPED:
        assert groups(os.path.join(saving.SHIPPED_MODELS_DIR, name, saving.MODEL_FILE)) == {"layers", "vars"}, name


@pytest.mark.slow
def test_kill_9_then_restart_continues(tmp_path, repo_root):
    """A run killed with SIGKILL mid-training resumes from its last backup, and logs stay readable."""
    run = tmp_path / "run"
    command = [sys.executable, os.path.join(repo_root, "bin", "train"), "--flagfile=experiments/smoke.flags",
               f"--model_dir={run}", f"--save_dir={tmp_path / 'model'}", "--max_steps=2000",
               "--checkpoint_every_steps=10", "--eval_every_steps=25"]
    log = open(tmp_path / "first.log", "w")
    process = subprocess.Popen(command, cwd=repo_root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (run / "backup" / "training_metadata.json").exists():
        time.sleep(0.2)
    time.sleep(1.5)  # kill it in the middle of training, a few backups in
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = backup_step(str(run))
    assert 10 <= killed_at < 2000 and killed_at % 10 == 0
    result = subprocess.run(command[:-3] + [f"--max_steps={killed_at + 30}", "--checkpoint_every_steps=10",
                                            "--eval_every_steps=25"],
                            cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Resuming {run} from step {killed_at}" in result.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == killed_at + 30 and summary["steps_this_run"] == 30
    # Not a terminal: whole lines, one per validation, no log noise (70 smoke steps read nothing yet: a warning)
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith(("step ", "warning: ")) for line in lines), result.stderr[-2000:]
    assert all(len(line) < 200 for line in lines)


def test_wall_time_limit_stops_training(tmp_path, smoke_config):
    summary = train(smoke_config.replace(max_train_seconds=2, max_steps=100000), str(tmp_path / "run"), verbose=0)
    assert summary["stop_reason"] == "max_train_seconds"
    assert 0 < summary["steps"] < 100000


def test_progress_counts_steps_not_epochs(tmp_path, smoke_config, capsys):
    train(smoke_config.replace(max_steps=20), str(tmp_path / "run"), verbose=1)
    captured = capsys.readouterr()
    err = captured.err
    assert "step 10/20" in err and "step 20/20" in err and "Epoch" not in captured.out + err
    # 20 smoke steps read nothing yet: the run ends with a warning line
    assert np.all([line.startswith(("step ", "warning: ")) for line in err.strip().splitlines()])


def test_the_target_does_not_stop_training_before_min_steps():
    """Real folders of a few hundred images validate on a few dozen: read perfectly at step 200 of 1200
    (amazon_6letter, 250 labels) stopped a fine-tuning run at 96% on the test split. min_steps holds it."""
    from kcaptcha.training.callbacks import TargetAccuracyStop

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    stop = TargetAccuracyStop(0.99, min_step=1200)
    stop.set_model(model)
    model.optimizer.iterations.assign(200)
    stop.on_epoch_end(1, {"val_image_accuracy": 1.0})
    assert not model.stop_training and stop.reached is None
    model.optimizer.iterations.assign(1200)
    stop.on_epoch_end(11, {"val_image_accuracy": 1.0})
    assert model.stop_training and stop.reached == 1.0


def test_a_model_that_reads_nothing_is_reported_not_passed_off(tmp_path, smoke_config, capsys):
    # Two steps at a tiny rate on 4 digits: the CTC model reads nothing, and the summary and stderr say so.
    config = smoke_config.replace(charset="0123456789", min_length=4, max_length=4, max_steps=2,
                                  eval_every_steps=2, learning_rate=1e-6)
    summary = train(config, str(tmp_path / "run"), save_dir=str(tmp_path / "model"), verbose=0)
    assert summary["metrics"]["val_image_accuracy"] == 0.0
    assert "read none of its validation images" in summary["warning"]
    assert "warning: the best model read none" in capsys.readouterr().err
    metadata = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert "read none" in metadata["training"]["warning"]  # the saved model carries it too


def test_an_image_that_does_not_decode_is_named_when_training_meets_it(tmp_path, smoke_config):
    from tests.conftest import write_captchas

    paths = write_captchas(str(tmp_path / "folder"), smoke_config, 24)
    with open(paths[5], "rb") as f:
        data = f.read()
    with open(paths[5], "wb") as f:  # a download cut short: the PNG signature and half its data
        f.write(data[:len(data) // 2])
    config = smoke_config.replace(train_dir=str(tmp_path / "folder"), max_steps=20)
    with pytest.raises(ValueError, match="1 image\\(s\\) cannot be decoded: " + re.escape(paths[5])):
        train(config, str(tmp_path / "run"), verbose=0)
