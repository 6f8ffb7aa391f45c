import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from kcaptcha import callbacks, model as kc_model
from kcaptcha.train import train


def test_default_and_legacy_models_have_one_row_per_position(smoke_config):
    for kind in ("default", "legacy"):
        config = smoke_config.replace(model=kind)
        model = kc_model.build_model(config)
        assert model.output_shape == (None, config.max_length, len(config.charset))
    variable = smoke_config.replace(min_length=1, max_length=3)
    assert kc_model.build_model(variable).output_shape == (None, 3, len(variable.charset) + 1)


def test_metrics_count_characters_and_whole_images():
    y_true = np.array([[0, 1], [1, 1]])
    y_pred = keras.ops.one_hot(np.array([[0, 1], [1, 0]]), 2)
    assert float(keras.ops.mean(kc_model.image_accuracy(y_true, y_pred))) == 0.5
    assert float(keras.ops.mean(kc_model.character_accuracy(y_true, y_pred))) == 0.75


def test_train_saves_model_metadata_logs_and_curves(tmp_path, smoke_config):
    summary = train(smoke_config, str(tmp_path / "run"), save_dir=str(tmp_path / "model"), verbose=0)
    assert summary["steps"] == smoke_config.max_steps
    run = tmp_path / "run"
    assert (run / "learning_curves.png").stat().st_size > 1000
    assert len((run / "history.csv").read_text().splitlines()) == 1 + smoke_config.max_steps // 10
    assert any((run / "logs").rglob("*tfevents*"))
    metadata = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert metadata["charset"] == smoke_config.charset and metadata["model_kind"] == "default"
    assert metadata["training"]["steps"] == smoke_config.max_steps
    assert "val_image_accuracy" in metadata["metrics"]


def test_target_accuracy_stops_early(tmp_path, smoke_config):
    # A 2-character, 4-symbol task: after one validation some of the 64 images are read right.
    config = smoke_config.replace(target_accuracy=0.001, max_steps=100)
    summary = train(config, str(tmp_path / "run"), verbose=0)
    assert summary["stop_reason"] == "target_accuracy"
    assert summary["steps"] == config.eval_every_steps
    assert summary["metrics"]["val_image_accuracy"] >= 0.001


def test_legacy_model_trains(tmp_path, smoke_config):
    summary = train(smoke_config.replace(model="legacy", max_steps=10), str(tmp_path / "run"),
                    save_dir=str(tmp_path / "model"), verbose=0)
    assert json.loads((tmp_path / "model" / "metadata.json").read_text())["model_kind"] == "legacy"
    assert summary["steps"] == 10


def test_learns_from_a_folder_of_files(tmp_path, smoke_config):
    from tests.conftest import write_captchas

    write_captchas(str(tmp_path / "train"), smoke_config, 40)
    write_captchas(str(tmp_path / "val"), smoke_config, 16, seed=8)
    config = smoke_config.replace(train_dir=str(tmp_path / "train"), val_dir=str(tmp_path / "val"), max_steps=10)
    summary = train(config, str(tmp_path / "run"), verbose=0)
    assert summary["steps"] == 10 and summary["data"] == str(tmp_path / "train")


def test_checkpoints_keep_the_last_few(tmp_path, smoke_config):
    config = smoke_config.replace(max_steps=50, checkpoint_every_steps=10, keep_checkpoints=2)
    train(config, str(tmp_path / "run"), verbose=0)
    steps = [step for step, _ in callbacks.list_checkpoints(str(tmp_path / "run" / "checkpoints"))]
    assert steps == [40, 50]
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp*"))


def test_resume_continues_from_the_latest_checkpoint(tmp_path, smoke_config):
    run = str(tmp_path / "run")
    train(smoke_config.replace(max_steps=20), run, verbose=0)
    checkpoint = callbacks.list_checkpoints(os.path.join(run, "checkpoints"))[-1][1]
    weights = keras.models.load_model(checkpoint).get_weights()
    summary = train(smoke_config.replace(max_steps=40), run, verbose=0)
    assert summary["steps"] == 40  # 20 restored + 20 new, not 40 new
    resumed = keras.models.load_model(checkpoint)
    assert all(np.array_equal(a, b) for a, b in zip(weights, resumed.get_weights()))
    fresh = train(smoke_config.replace(max_steps=20), run, fresh=True, verbose=0)
    assert fresh["steps"] == 20


def test_a_different_task_in_the_same_model_dir_is_refused(tmp_path, smoke_config):
    run = str(tmp_path / "run")
    train(smoke_config.replace(max_steps=10), run, verbose=0)
    with pytest.raises(ValueError, match="different charset"):
        train(smoke_config.replace(charset="0123456789", max_steps=10), run, verbose=0)


@pytest.mark.slow
def test_kill_9_then_restart_continues(tmp_path, repo_root):
    """A run killed with SIGKILL mid-training resumes from its last complete checkpoint."""
    run = tmp_path / "run"
    command = [sys.executable, os.path.join(repo_root, "bin", "train"), "--flagfile=experiments/smoke.flags",
               f"--model_dir={run}", f"--save_dir={tmp_path / 'model'}", "--max_steps=400",
               "--checkpoint_every_steps=10", "--eval_every_steps=10"]
    process = subprocess.Popen(command, cwd=repo_root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(callbacks.list_checkpoints(str(run / "checkpoints"))) < 2:
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = callbacks.list_checkpoints(str(run / "checkpoints"))[-1][0]
    assert 10 <= killed_at < 400
    keras.models.load_model(callbacks.list_checkpoints(str(run / "checkpoints"))[-1][1])  # complete, loadable
    result = subprocess.run(command[:-3] + ["--max_steps=" + str(killed_at + 20), "--checkpoint_every_steps=10",
                                            "--eval_every_steps=10"],
                            cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Resuming from" in result.stdout + result.stderr
    assert json.loads(result.stdout[result.stdout.index("{"):])["steps"] == killed_at + 20


def test_wall_time_limit_stops_training(tmp_path, smoke_config):
    summary = train(smoke_config.replace(max_train_seconds=2, max_steps=100000), str(tmp_path / "run"), verbose=0)
    assert summary["stop_reason"] == "max_train_seconds"
    assert 0 < summary["steps"] < 100000
