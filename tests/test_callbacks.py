"""`AtomicModelCheckpoint`: the best model is replaced whole or not at all, ties keep the later model, and a
resumed run keeps its best so far."""

import os

import keras
import numpy as np
import pytest

from kcaptcha.training.callbacks import AtomicModelCheckpoint


def small_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(), loss="mse")
    return model


def kept_weights(path):
    return keras.models.load_model(path).get_weights()


def test_a_save_that_fails_half_way_leaves_the_best_model_whole(tmp_path, monkeypatch):
    path = str(tmp_path / "best.keras")
    model = small_model()
    checkpoint = AtomicModelCheckpoint(path)
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"val_image_accuracy": 0.5})
    before = kept_weights(path)

    def crash(filepath, *args, **kwargs):  # a kill or a full disk in the middle of writing the zip
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device")

    model.set_weights([w + 1.0 for w in model.get_weights()])
    monkeypatch.setattr(model, "save", crash)
    with pytest.raises(OSError):
        checkpoint.on_epoch_end(1, {"val_image_accuracy": 0.9})
    for kept, expected in zip(kept_weights(path), before):
        np.testing.assert_array_equal(kept, expected)
    assert os.listdir(tmp_path) == ["best.keras"]  # no temporary file left behind


def test_a_resumed_run_replaces_its_best_only_with_one_at_least_as_good(tmp_path):
    path = str(tmp_path / "best.keras")
    model = small_model()
    checkpoint = AtomicModelCheckpoint(path, initial_value_threshold=0.8)  # the history's best so far
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"val_image_accuracy": 0.7})
    assert not os.path.exists(path)
    checkpoint.on_epoch_end(1, {"val_image_accuracy": 0.8})  # a tie: the later model
    assert os.path.exists(path) and checkpoint.best == 0.8
    with pytest.warns(UserWarning, match="'val_image_accuracy' is not in the logs"):
        checkpoint.on_epoch_end(2, {"loss": 1.0})


def test_mode_min_keeps_the_lowest_and_a_bad_mode_is_a_clear_error(tmp_path):
    model = small_model()
    checkpoint = AtomicModelCheckpoint(str(tmp_path / "best.keras"), monitor="val_loss", mode="min")
    checkpoint.set_model(model)
    for epoch, loss in enumerate([2.0, 1.0, 1.5, 1.0]):
        checkpoint.on_epoch_end(epoch, {"val_loss": loss})
    assert checkpoint.best == 1.0
    with pytest.raises(ValueError, match="mode must be 'max' or 'min'. Received: mode='best'"):
        AtomicModelCheckpoint(str(tmp_path / "x.keras"), mode="best")
