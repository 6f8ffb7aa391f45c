"""Training under tf.distribute: the strategy flag, per-worker data, and two real workers on 127.0.0.1."""

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from kcaptcha.config import Config
from kcaptcha.reading import metrics
from kcaptcha.training import distribute
from tests.ports import free_local_ports


def test_strategy_and_precision_values_are_validated(repo_root):
    from kcaptcha.flags import parse_flagfile

    with pytest.raises(ValueError, match="strategy must be one of auto, one_device, mirrored, multi_worker. "
                                         "Received: strategy='tpu'"):
        Config(strategy="tpu").validate()
    with pytest.raises(ValueError, match="Received: mixed_precision='float8'"):
        Config(mixed_precision="float8").validate()
    cwd = os.getcwd()
    os.chdir(repo_root)
    try:
        config = parse_flagfile("experiments/smoke.flags", ["--strategy=multi_worker", "--mixed_precision=auto",
                                                            "--jit_compile"])
        with pytest.raises(ValueError, match="Received: strategy='parameter_server'"):
            parse_flagfile("experiments/smoke.flags", ["--strategy=parameter_server"])
    finally:
        os.chdir(cwd)
    assert (config.strategy, config.mixed_precision, config.jit_compile) == ("multi_worker", "auto", True)
    with pytest.raises(ValueError, match="must split evenly across the 3 replicas.*batch_size=64"):
        distribute.Workers(strategy=type("ThreeReplicas", (), {"num_replicas_in_sync": 3})()).per_replica_batch(64)


def test_workers_are_numbered_as_tensorflow_numbers_its_input_pipelines():
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    assert distribute.worker_place(cluster, "chief", 0) == (3, 0)
    assert distribute.worker_place(cluster, "worker", 1) == (3, 2)
    assert distribute.worker_place({"worker": ["a:1", "b:1"]}, "worker", 0) == (2, 0)  # worker 0 is the chief
    assert distribute.worker_place({}, None, 0) == (1, 0)
    with pytest.raises(ValueError, match="Received: TF_CONFIG task type 'evaluator'"):
        distribute.worker_place(cluster, "evaluator", 0)


@pytest.mark.parametrize("architecture", ["ctc", "heads", "legacy"])
def test_mixed_precision_keeps_logits_float32_and_saves_a_float32_model(smoke_config, architecture):
    import keras

    from kcaptcha import models

    config = smoke_config.replace(architecture=architecture, mixed_precision="mixed_bfloat16", jit_compile=True)
    with distribute.precision(config.mixed_precision) as policy:
        model = models.new_model(config)
    assert policy == "mixed_bfloat16" and keras.config.dtype_policy().name == "float32"  # restored after
    assert model.jit_compile is True
    assert {layer.compute_dtype for layer in model.layers if "conv" in layer.name} == {"bfloat16"}
    images = np.random.default_rng(0).random((2, config.height, config.width, 1), dtype=np.float32)
    assert keras.ops.convert_to_numpy(model(images)).dtype == np.float32  # what the loss reads
    saved = distribute.float32_copy(model, config)
    assert {layer.compute_dtype for layer in saved.layers} == {"float32"}
    np.testing.assert_allclose(saved(images), model(images), atol=0.1)  # the same weights, in float32


def _digests(images):
    return {hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images}


def test_each_worker_draws_its_own_synthetic_stream(smoke_config):
    """Worker 0 keeps the single-worker stream; another worker's captchas are all different images."""
    from kcaptcha.data import generate

    def stream(worker, first=0, count=48):
        config = smoke_config.replace(seed=distribute.data_seed(smoke_config.seed, worker))
        renderer = generate.CaptchaRenderer.from_config(config)
        return generate.render_arrays(renderer, count, first=first, workers=1)[0]

    alone = generate.render_arrays(generate.CaptchaRenderer.from_config(smoke_config), 48, workers=1)[0]
    first, second = stream(0), stream(1)
    assert np.array_equal(first, alone)
    assert not _digests(first) & _digests(second)
    assert not _digests(second) & _digests(stream(1, first=48))  # a resumed worker continues, not restarts
    assert not _digests(second) & _digests(stream(2))


def test_each_worker_reads_its_own_shard_of_the_files(smoke_config, captcha_folder):
    from kcaptcha.data import pipeline as data

    paths, labels = data.labelled_files(str(captcha_folder), smoke_config)
    config = smoke_config.replace(augment=0.0)
    seen = []
    for index in range(2):
        batches = data.training_batches(config, (paths, labels), batch_size=2, shard=(2, index))
        images = [image for batch, _ in batches.take(3) for image in batch.numpy()]  # 6 images: the shard once
        seen.append(_digests(images))
    assert len(seen[0]) == len(seen[1]) == 6 and not seen[0] & seen[1]
    with pytest.raises(ValueError, match="13 workers need at least 13 training images.*Received: 12"):
        data.training_batches(config, (paths, labels), batch_size=2, shard=(13, 0))


def test_shard_tallies_add_up_to_the_scores_of_the_whole_set():
    truths, readings = ["0123", "0123", "0123", "01", "33"], ["0123", "0124", "123", "012", "33"]
    shards = [metrics.tallies(truths[i::2], readings[i::2]) for i in range(2)]
    assert metrics.scores_from_tallies(np.sum(shards, axis=0)) == metrics.scores(truths, readings)


def _start_workers(repo_root, tmp_path, ports, extra, tag):
    """Starts one `bin/train --strategy=multi_worker` per port; returns [(process, log path)]."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    started = []
    for index in range(len(ports)):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        log = tmp_path / f"{tag}-{index}.log"
        command = [sys.executable, os.path.join(repo_root, "bin", "train"), "--flagfile=experiments/smoke.flags",
                   "--strategy=multi_worker", f"--model_dir={tmp_path / 'run'}", f"--save_dir={tmp_path / 'model'}",
                   "--noexport", *extra]
        with open(log, "w") as out:
            started.append((subprocess.Popen(command, cwd=repo_root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                             start_new_session=True), log))
    return started


def _finish(started, timeout=240):
    deadline = time.time() + timeout
    results = []
    for process, log in started:
        try:
            process.wait(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        results.append((process.returncode, log.read_text()))
    return results


def _chief_summary(run_dir):
    """What the chief's bin/train wrote to the run folder (its output ends with one line naming this file)."""
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


def _history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _check_chief_model_reads(smoke_config, run_dir, summary):
    """The chief's saved model reads the validation captchas, scoring exactly what every worker logged."""
    import kcaptcha
    from kcaptcha.data import pipeline as data

    validation = data.synthetic_set(smoke_config, smoke_config.val_size, data.validation_seed(smoke_config))
    readings = [p.text for p in kcaptcha.load_model(summary["saved_to"], tta=0).predict(list(validation.images))]
    assert len(readings) == smoke_config.val_size
    # After 20 steps readings are near guesses; they are still of the charset.
    assert all(set(text) <= set(smoke_config.charset) for text in readings)
    expected = metrics.scores(validation.labels, readings)
    # Within one image: after 20 steps many readings are near-ties, and the workers' validation (its share of
    # the images per worker, in batches of another size) can flip one of them against the saved model's.
    one_image = 1 / smoke_config.val_size + 1e-4
    assert summary["metrics"]["val_image_accuracy"] == pytest.approx(expected["image_accuracy"], abs=one_image)
    assert summary["metrics"]["val_character_accuracy"] == pytest.approx(expected["character_accuracy"],
                                                                          abs=one_image)


def _progress_lines(output):  # "step 10/20  1.2 steps/s  ETA 0m09s  val_image_accuracy 0.0000 (step 10)  loss 17.07"
    return [line for line in output.splitlines() if line.startswith("step ") and "steps/s" in line]


@pytest.mark.slow
def test_two_workers_train_the_smoke_config_and_only_the_chief_saves(tmp_path, repo_root, smoke_config):
    results = _finish(_start_workers(repo_root, tmp_path, free_local_ports(2), [], "run"))
    for code, output in results:
        assert code == 0, output[-3000:]
    chief = _chief_summary(tmp_path / "run")
    assert chief["steps"] == smoke_config.max_steps and "val_character_accuracy" in chief["last_validation"]
    assert chief["images_seen"] == smoke_config.max_steps * smoke_config.batch_size  # the global batch
    assert f"Worker 1 done ({smoke_config.max_steps} steps); the chief saves the model." in results[1][1]
    # Validation agrees on every worker (each scores half the images; the tallies are all-reduced), and so
    # does the loss (all-reduced by Keras): the early stop and the target stop decide alike everywhere.
    chief_lines, worker_lines = (_progress_lines(output) for _, output in results)
    assert len(chief_lines) == 2 and [line.split("val_image_accuracy")[1] for line in chief_lines] == \
        [line.split("val_image_accuracy")[1] for line in worker_lines]
    assert [int(float(row["step"])) for row in _history(tmp_path / "run")] == [10, 20]
    assert not (tmp_path / "run" / ".worker-1").exists()  # the other worker wrote only its own, removed folder
    _check_chief_model_reads(smoke_config, tmp_path / "run", chief)


@pytest.mark.slow
def test_a_killed_worker_restarted_with_the_cluster_continues_the_run(tmp_path, repo_root, smoke_config):
    """As in any MultiWorkerMirroredStrategy job, losing a worker stops the others; restarting the workers
    resumes from the chief's last backup, not from the start."""
    from tests.test_train import backup_step

    ports = free_local_ports(2)
    extra = ["--max_steps=40", "--checkpoint_every_steps=10", "--eval_every_steps=20"]
    started = _start_workers(repo_root, tmp_path, ports, extra, "first")
    metadata = tmp_path / "run" / "backup" / "training_metadata.json"
    deadline = time.time() + 180
    while time.time() < deadline and not metadata.exists() and started[0][0].poll() is None:
        time.sleep(0.2)
    assert metadata.exists(), started[0][1].read_text()[-3000:]
    os.killpg(started[1][0].pid, signal.SIGKILL)
    (code, output), _ = _finish(started, timeout=90)
    assert code == 1 and "Restart every worker with the same command" in output, output[-3000:]
    killed_at = backup_step(str(tmp_path / "run"))
    assert 10 <= killed_at < 40

    results = _finish(_start_workers(repo_root, tmp_path, ports, extra, "restart"))
    for code, output in results:
        assert code == 0, output[-3000:]
        assert f"from step {killed_at}" in output
    chief = _chief_summary(tmp_path / "run")
    assert chief["steps"] == 40 and chief["steps_this_run"] == 40 - killed_at
    drawn = [float(row["captchas_drawn"]) for row in _history(tmp_path / "run")]
    assert drawn == sorted(drawn)  # each worker's stream continued where it stopped
    _check_chief_model_reads(smoke_config, tmp_path / "run", chief)
