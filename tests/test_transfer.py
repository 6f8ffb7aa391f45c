"""Starting from a saved model (--init_from) and the defaults a training folder implies."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kcaptcha import models
from kcaptcha.training import transfer
from kcaptcha.training.train import train
from tests.conftest import write_captchas


def test_output_columns_are_mapped_by_character_then_blank():
    rng = np.random.default_rng(0)
    source = [rng.normal(size=(8, 4)), rng.normal(size=(4,))]  # 'abc' and a blank
    fresh = [np.zeros((8, 4)), np.zeros((4,))]  # 'cAx' and a blank
    kernel, bias = transfer.map_classes(fresh, source, "cAx", "abc")
    assert np.array_equal(kernel[:, 0], source[0][:, 2]) and bias[0] == source[1][2]  # c from c
    assert np.array_equal(kernel[:, 1], source[0][:, 0])  # A from a: the other case
    assert not kernel[:, 2].any()  # x is new: it keeps its fresh initialisation
    assert np.array_equal(kernel[:, 3], source[0][:, 3])  # the blank from the blank


@pytest.fixture(scope="module")
def source_model(smoke_model_dir):
    return smoke_model_dir


def test_fine_tuning_copies_what_fits_and_maps_the_charset(tmp_path, smoke_config, source_model):
    config = smoke_config.replace(charset="01234", init_from=source_model, max_steps=10, eval_every_steps=10)
    summary = train(config, str(tmp_path / "run"), save_dir=str(tmp_path / "model"), verbose=0)
    copied = summary["initialized_from"]
    assert copied["layers_mapped_by_character"] == ["logits"] and copied["layers_fresh"] == []
    assert copied["layers_copied"] >= 10 and copied["charset"] == "0123"
    metadata = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert metadata["config"]["init_from"] == source_model
    assert metadata["training"]["initialized_from"]["model"] == os.path.abspath(source_model)


def test_fine_tuning_starts_from_the_source_weights(smoke_config, source_model):
    import keras

    config = smoke_config.replace(init_from=source_model, height=32)  # another height: the frame layer differs
    model = models.new_model(config)
    report = transfer.copy_weights(model, source_model, config.charset)
    assert report["layers_fresh"] == ["frame_dense"]
    source = keras.models.load_model(os.path.join(source_model, "model.keras"))
    for name in ("stem_conv", "stage1_a_conv", "logits"):
        assert all(np.array_equal(a, b) for a, b in zip(model.get_layer(name).get_weights(),
                                                        source.get_layer(name).get_weights()))


def test_extra_blocks_grow_a_saved_model_that_reads_as_before_until_trained(tmp_path, smoke_config, source_model):
    import keras

    config = smoke_config.replace(init_from=source_model, extra_blocks=2)
    model = models.new_model(config)
    report = transfer.copy_weights(model, source_model, config.charset)
    assert sorted(report["layers_fresh"]) == sorted(f"extra{i}_{part}" for i in (1, 2)
                                                    for part in ("a_conv", "a_bn", "b_conv", "b_bn"))
    source = keras.models.load_model(os.path.join(source_model, "model.keras"))
    images = np.random.default_rng(0).random((6, config.height, config.width, 1), dtype=np.float32)
    np.testing.assert_allclose(model.predict(images, verbose=0), source.predict(images, verbose=0), atol=1e-5)

    # Trained, the blocks leave the identity: their last batch-norm scale moves off zero.
    run = smoke_config.replace(init_from=source_model, extra_blocks=1, max_steps=20, eval_every_steps=20)
    summary = train(run, str(tmp_path / "run"), save_dir=str(tmp_path / "model"), verbose=0)
    grown = keras.models.load_model(os.path.join(summary["saved_to"], "model.keras"))
    assert np.abs(grown.get_layer("extra1_b_bn").get_weights()[0]).max() > 0
    assert json.loads((tmp_path / "model" / "metadata.json").read_text())["config"]["extra_blocks"] == 1


def test_bin_train_says_what_it_chose_for_a_folder(tmp_path, smoke_config, repo_root):
    write_captchas(str(tmp_path / "raw"), smoke_config, 24)
    result = subprocess.run(
        [sys.executable, os.path.join(repo_root, "bin", "train"), f"--train_dir={tmp_path / 'raw'}",
         f"--model_dir={tmp_path / 'run'}", f"--save_dir={tmp_path / 'model'}", "--max_steps=4", "--batch_size=8",
         "--conv_filters=8,16", "--pool_size=64", "--val_size=16", "--noexport", "--init_from=none"],
        cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "24 labelled images in" in result.stdout and "charset='0123'" in result.stdout.replace('"', "'")
    assert "synthetic_mix=0.0" in result.stdout  # the chose line names the synthetic share
    last = result.stdout.strip().splitlines()[-1]  # one line ends the run; the details are in summary.json
    assert last.startswith(f"Saved {tmp_path / 'model'}: ") and str(tmp_path / "run" / "summary.json") in last
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["saved_to"] == str(tmp_path / "model")
    metadata = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert (metadata["width"], metadata["height"], metadata["max_length"]) == (48, 24, 2)


