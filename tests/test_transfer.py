"""Starting from a saved model (--init_from) and the defaults a training folder implies."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from kcaptcha import models

from kcaptcha.data import inventory

from kcaptcha.training import transfer
from kcaptcha.config import Config
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


def test_the_source_decides_the_model_fields_unless_given(source_model):
    config = Config(init_from=source_model, conv_filters=(4, 8))
    chosen, notes = transfer.fill_from_source(config, given={"init_from"})
    source = Config.from_dict(json.loads(open(os.path.join(source_model, "metadata.json")).read())["config"])
    assert chosen.conv_filters == source.conv_filters
    assert chosen.learning_rate == config.learning_rate  # the run's own rate: a lower one fine-tuned worse
    kept, _ = transfer.fill_from_source(config, given={"init_from", "conv_filters", "learning_rate"})
    assert kept.conv_filters == (4, 8) and kept.learning_rate == config.learning_rate
    assert notes and source_model in notes[0]
    with pytest.raises(FileNotFoundError, match="Model folder not found"):
        transfer.fill_from_source(Config(init_from="/no/such/model"), given=set())


def test_a_folder_decides_the_task_when_not_given(tmp_path, smoke_config):
    folder = tmp_path / "raw"
    write_captchas(str(folder), smoke_config.replace(charset="abc", min_length=3, max_length=5), 12)
    Image.new("RGB", (300, 120), "white").save(folder / "abcab_odd.png")  # a taller one, but not the most common
    config, notes = inventory.fill_from_folder(Config(train_dir=str(folder)), given={"train_dir"})
    assert set(config.charset) <= set("abc") and (config.min_length, config.max_length) == (3, 5)
    assert (config.width, config.height) == (smoke_config.width, smoke_config.height)
    assert config.style == "varied" and config.eval_every_steps == 100 and "13 images" in notes[0]
    assert config.min_steps == config.max_steps  # a dozen validation images must not end the run early
    given, _ = inventory.fill_from_folder(Config(train_dir=str(folder), charset="abcdef"),
                                          given={"train_dir", "charset"})
    assert given.charset == "abcdef"


def test_tall_images_are_scaled_to_the_model_height(tmp_path):
    folder = tmp_path / "tall"
    folder.mkdir()
    for index in range(3):
        Image.new("L", (400, 160), 255).save(folder / f"ab{index}_x.png")
    config, _ = inventory.fill_from_folder(Config(train_dir=str(folder)), given={"train_dir"})
    assert (config.width, config.height) == (160, 64)


def test_bin_train_says_what_it_chose_for_a_folder(tmp_path, smoke_config, repo_root):
    write_captchas(str(tmp_path / "raw"), smoke_config, 24)
    result = subprocess.run(
        [sys.executable, os.path.join(repo_root, "bin", "train"), f"--train_dir={tmp_path / 'raw'}",
         f"--model_dir={tmp_path / 'run'}", f"--save_dir={tmp_path / 'model'}", "--max_steps=4", "--batch_size=8",
         "--conv_filters=8,16", "--pool_size=64", "--val_size=16", "--noexport"],
        cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "24 images in" in result.stdout and "charset='0123'" in result.stdout.replace('"', "'")
    assert f"bin/evaluate --model={tmp_path / 'model'} --tta=8" in result.stdout  # the hint, with the real path
    summary = json.loads(result.stdout[result.stdout.index("{"):])  # the summary is still the JSON at the end
    assert summary["saved_to"] == str(tmp_path / "model")
    metadata = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert (metadata["width"], metadata["height"], metadata["max_length"]) == (48, 24, 2)


def test_folders_of_500_to_1000_images_train_longer_than_a_few_hundred():
    # captcha_images_v2, 832 images: 95.7% after 1200 steps, 99.0-99.5% after 1800-2250 (docs/REAL_DATA.md).
    assert [inventory.folder_steps(n) for n in (100, 500, 501, 1000, 1001, 5000, 5001)] == [
        1200, 1200, 2000, 2000, 3000, 3000, 6000]
