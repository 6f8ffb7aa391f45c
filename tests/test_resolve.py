"""kcaptcha.training.resolve: one resolved run from the flags, the base model and the training folder."""

import json
import os

import pytest
from PIL import Image

from kcaptcha.config import Config
from kcaptcha.export import saving
from kcaptcha.training import resolve
from tests.conftest import write_captchas


def test_the_base_model_decides_the_model_fields_unless_given(smoke_model_dir):
    config = Config(init_from=smoke_model_dir, conv_filters=(4, 8))
    chosen, notes = resolve.resolve(config, given={"init_from"})
    source = Config.from_dict(json.loads(open(os.path.join(smoke_model_dir, "metadata.json")).read())["config"])
    assert chosen.conv_filters == source.conv_filters
    assert chosen.learning_rate == config.learning_rate  # the run's own rate: a lower one fine-tuned worse
    kept, _ = resolve.resolve(config, given={"init_from", "conv_filters", "learning_rate"})
    assert kept.conv_filters == (4, 8) and kept.learning_rate == config.learning_rate
    assert notes and smoke_model_dir in notes[0]
    with pytest.raises(FileNotFoundError, match="Model folder not found"):
        resolve.resolve(Config(init_from="/no/such/model"), given=set())


def test_init_from_none_trains_from_scratch():
    config, notes = resolve.resolve(Config(init_from="none"), given={"init_from"})
    assert config.init_from == "" and notes == []


def test_a_folder_decides_the_task_when_not_given(tmp_path, smoke_config):
    folder = tmp_path / "raw"
    write_captchas(str(folder), smoke_config.replace(charset="abc", min_length=3, max_length=5), 12)
    Image.new("RGB", (300, 120), "white").save(folder / "abcab_odd.png")  # a taller one, but not the most common
    config, notes = resolve.resolve(Config(train_dir=str(folder), init_from="none"), given={"train_dir", "init_from"})
    assert set(config.charset) <= set("abc") and (config.min_length, config.max_length) == (3, 5)
    assert (config.width, config.height) == (smoke_config.width, smoke_config.height)
    assert config.style == "varied" and config.eval_every_steps == 100 and "13 labelled images" in notes[0]
    # A dozen validation images must not end the run early: the plateau stop waits for min_steps.
    assert 0 < config.min_steps < config.max_steps and config.patience >= 3
    given, _ = resolve.resolve(Config(train_dir=str(folder), charset="abcdef"), given={"train_dir", "charset"})
    assert given.charset == "abcdef"


def test_tall_images_are_scaled_to_the_model_height_and_the_notes_say_so(tmp_path):
    folder = tmp_path / "tall"
    folder.mkdir()
    for index in range(3):
        Image.new("L", (240, 80), 255).save(folder / f"ab{index}_x.png")
    config, notes = resolve.resolve(Config(train_dir=str(folder), init_from="none"), given={"train_dir", "init_from"})
    assert (config.width, config.height) == (192, 64)
    assert "the images are 240x80, read scaled down to 192x64" in notes[0]


def _blank_folder(folder, count):
    folder.mkdir()
    image = Image.new("L", (40, 20), 255)
    for index in range(count):
        image.save(folder / f"{index % 10}{index % 7}_{index}.png")


@pytest.mark.parametrize("count, steps, share", [(500, 2400, 0.0), (540, 3000, 0.5), (1000, 3000, 0.5),
                                                  (1001, 3000, 0.25)])
def test_one_count_decides_the_step_budget_and_the_synthetic_share(tmp_path, count, steps, share):
    """A 540-image folder (486 after the validation hold-out) is in one tier for every setting."""
    _blank_folder(tmp_path / "folder", count)
    config, notes = resolve.resolve(Config(train_dir=str(tmp_path / "folder"), init_from="none"),
                                    given={"train_dir", "init_from"})
    assert (config.max_steps, config.synthetic_mix) == (steps, share)
    assert f"synthetic_mix={share}" in notes[-1]


def test_the_python_api_resolves_what_differs_from_the_defaults(tmp_path, smoke_config):
    write_captchas(str(tmp_path / "raw"), smoke_config, 12)
    config, _ = resolve.resolve(Config(train_dir=str(tmp_path / "raw"), max_steps=77, init_from="none"))
    assert config.max_steps == 77 and config.min_steps == 77  # given: kept, and the plateau waits for it
    assert config.charset == "0123" and config.style == "varied"  # left at the default: from the folder


def test_labels_csv_decides_over_the_names(tmp_path):
    folder = tmp_path / "collected"
    folder.mkdir()
    image = Image.new("L", (40, 20), 255)
    for name in ("a.png", "b.png", "c.png"):
        image.save(folder / name)
    (folder / "labels.csv").write_text("filename,label,confidence,status\na.png,xyz,0.9,accepted\n"
                                       "b.png,xy,,corrected\nc.png,qq,0.3,unreviewed\n")
    config, notes = resolve.resolve(Config(train_dir=str(folder), init_from="none"), given={"train_dir", "init_from"})
    assert config.charset == "xyz" and (config.min_length, config.max_length) == (2, 3)
    assert "2 labelled images" in notes[0] and "1 unlabelled" in notes[0] and "labels.csv" in notes[0]


def test_the_charset_fitted_to_the_labels_case():
    assert resolve.fitted_charset("0123abc", "AB1") == "0123ABc"
    assert resolve.fitted_charset("0123abc", "12") == "0123abc"
    assert resolve.fitted_charset("0123abc", "12z") is None


@pytest.fixture
def shipped_general(smoke_model_dir, tmp_path, monkeypatch):
    """A shipped folder whose `general` is the smoke model (charset 0123)."""
    import shutil

    from kcaptcha.export import saving

    shipped = tmp_path / "shipped"
    shutil.copytree(smoke_model_dir, shipped / resolve.DEFAULT_BASE)
    monkeypatch.setattr(saving, "SHIPPED_MODELS_DIR", str(shipped))
    return str(shipped / resolve.DEFAULT_BASE)


def _labelled(folder, labels):
    folder.mkdir()
    image = Image.new("L", (48, 24), 255)
    for index, label in enumerate(labels):
        image.save(folder / f"{label}_{index}.png")


def test_a_folder_starts_from_the_shipped_base_when_it_can_spell_the_labels(shipped_general, tmp_path):
    _labelled(tmp_path / "fits", ["01", "12", "20"])
    config, notes = resolve.resolve(Config(train_dir=str(tmp_path / "fits")), given={"train_dir"})
    assert config.init_from == resolve.DEFAULT_BASE and "Starting from the shipped general" in notes[0]
    # The base's charset, not the three characters these labels happen to hold.
    assert config.charset == "0123"
    scratch, _ = resolve.resolve(Config(train_dir=str(tmp_path / "fits"), init_from="none"),
                                 given={"train_dir", "init_from"})
    assert scratch.init_from == "" and scratch.charset == "012"
    _labelled(tmp_path / "other", ["0x", "1y"])
    other, notes = resolve.resolve(Config(train_dir=str(tmp_path / "other")), given={"train_dir"})
    assert other.init_from == "" and "Training from scratch" in notes[0] and other.charset == "01xy"


def test_a_given_base_keeps_its_charset_and_adds_what_the_labels_hold(smoke_model_dir, tmp_path):
    _labelled(tmp_path / "f", ["01", "1z"])
    config, _ = resolve.resolve(Config(train_dir=str(tmp_path / "f"), init_from=smoke_model_dir),
                                given={"train_dir", "init_from"})
    assert config.charset == "0123z"
    given, _ = resolve.resolve(Config(train_dir=str(tmp_path / "f"), init_from=smoke_model_dir, charset="01z"),
                               given={"train_dir", "init_from", "charset"})
    assert given.charset == "01z"


def test_a_base_model_decides_the_image_size_so_that_every_layer_fits(smoke_model_dir, tmp_path):
    (tmp_path / "f").mkdir()
    for index, label in enumerate(["01", "12"]):
        Image.new("L", (90, 30), 255).save(tmp_path / "f" / f"{label}_{index}.png")
    base = saving.read_metadata(smoke_model_dir)
    config, notes = resolve.resolve(Config(train_dir=str(tmp_path / "f"), init_from=smoke_model_dir),
                                    given={"train_dir", "init_from"})
    assert (config.width, config.height) == (base["width"], base["height"]) != (90, 30)
    assert f"the images are 90x30, read resized to {base['width']}x{base['height']}" in " ".join(notes)
    given, _ = resolve.resolve(Config(train_dir=str(tmp_path / "f"), init_from=smoke_model_dir, width=88,
                                      height=32), given={"train_dir", "init_from", "width", "height"})
    assert (given.width, given.height) == (88, 32)
    scratch, _ = resolve.resolve(Config(train_dir=str(tmp_path / "f"), init_from="none"),
                                 given={"train_dir", "init_from"})
    assert (scratch.width, scratch.height) == (90, 30)
