"""The Keras internals `kcaptcha.training.keras_compat` relies on: a Keras release that moves them fails here,
not silently in a training run."""

import configparser
import inspect
import os
import shutil

import keras
import numpy as np
import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from kcaptcha.training import keras_compat

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pinned_keras() -> SpecifierSet:
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO_ROOT, "setup.cfg"))
    lines = [line.strip() for line in config["options.extras_require"]["train"].splitlines()]
    (requirement,) = [line for line in lines if line.startswith("keras") and not line.startswith("keras-")]
    return SpecifierSet(requirement[len("keras"):])


def test_the_installed_keras_is_inside_the_tested_range_that_setup_cfg_pins():
    assert pinned_keras() == SpecifierSet(",".join(keras_compat.TESTED_KERAS))
    assert Version(keras.__version__) in pinned_keras(), (
        f"Keras {keras.__version__} is outside {keras_compat.TESTED_KERAS}: check every workaround in "
        "kcaptcha/training/keras_compat.py against its source, then widen the range here and in setup.cfg")


def test_the_private_keras_code_the_workarounds_hook_into_is_still_there():
    from keras.src.backend.tensorflow import trainer

    # average_logs_across_workers replaces this module function, which the train step calls by its global name
    assert list(inspect.signature(trainer.reduce_per_replica).parameters) == ["values", "strategy", "reduction"]
    assert "outputs = reduce_per_replica(" in inspect.getsource(trainer.TensorFlowTrainer._make_function)
    assert callable(trainer._collective_all_reduce_multi_worker)
    # build_before_fit calls the one and silences the other, which fit calls before its first step
    assert "data_batch" in inspect.signature(keras.Model._symbolic_build).parameters
    assert "self._maybe_symbolic_build(" in inspect.getsource(trainer.TensorFlowTrainer.fit)
    # BackupAtEnd writes its last backup with the callback's own writer
    assert list(inspect.signature(keras.callbacks.BackupAndRestore._save_model).parameters) == ["self"]
    # restore_backup leaves the restored epoch where fit reads it
    assert "self._initial_epoch" in inspect.getsource(trainer.TensorFlowTrainer.fit)


def small_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.01), loss="mse")
    return model


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 4)).astype("float32"), rng.normal(size=(40, 1)).astype("float32")


def test_restore_backup_loads_weights_step_and_epoch_as_fit_will(tmp_path):
    x, y = data()
    backup_dir = str(tmp_path / "backup")
    trained = small_model()
    backup = keras.callbacks.BackupAndRestore(backup_dir, save_freq=4, double_checkpoint=True, delete_checkpoint=False)
    trained.fit(x, y, batch_size=5, epochs=2, callbacks=[backup], verbose=0, shuffle=False)  # backups at steps 4..16

    damaged = str(tmp_path / "damaged")
    shutil.copytree(backup_dir, damaged)

    restored = small_model()
    keras_compat.restore_backup(restored, backup_dir)
    assert int(restored.optimizer.iterations.numpy()) == 16
    for mine, theirs in zip(restored.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    history = restored.fit(x, y, batch_size=5, epochs=3, callbacks=[keras.callbacks.BackupAndRestore(backup_dir)],
                           verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 2  # fit went on from the epoch the backup was written in (1), not 0

    # a damaged latest backup: Keras' own fall-back to the one before
    with open(os.path.join(damaged, "latest.weights.h5"), "wb") as f:
        f.write(b"damaged")
    fallback = small_model()
    keras_compat.restore_backup(fallback, damaged)
    assert int(fallback.optimizer.iterations.numpy()) == 12

    nothing = small_model()
    keras_compat.restore_backup(nothing, str(tmp_path / "none"))  # no backup: nothing happens
    assert int(nothing.optimizer.iterations.numpy()) == 0


def test_backup_at_end_backs_up_where_fit_stopped_as_well_as_every_save_freq_steps(tmp_path):
    x, y = data()
    backup_dir = str(tmp_path / "backup")
    trained = small_model()
    stop = keras.callbacks.LambdaCallback(  # stops mid-epoch, at step 13 of 16, as a time cap or step limit does
        on_train_batch_end=lambda batch, logs: setattr(trained, "stop_training",
                                                       int(trained.optimizer.iterations.numpy()) >= 13))
    trained.fit(x, y, batch_size=5, epochs=2, callbacks=[keras_compat.BackupAtEnd(backup_dir, save_freq=5), stop],
                verbose=0, shuffle=False)  # backups at steps 5 and 10, and 13 at the end
    assert int(trained.optimizer.iterations.numpy()) == 13
    restored = small_model()
    keras_compat.restore_backup(restored, backup_dir)
    assert int(restored.optimizer.iterations.numpy()) == 13
    for mine, theirs in zip(restored.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    history = restored.fit(x, y, batch_size=5, epochs=3, callbacks=[keras_compat.BackupAtEnd(backup_dir, 5)],
                           verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 1  # fit went on after the epoch it had stopped in (1), not within it


def test_build_before_fit_builds_the_training_state_from_shapes_and_fit_still_trains():
    import tensorflow as tf

    x, y = data()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = small_model()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    assert not model.optimizer.built
    keras_compat.build_before_fit(model, strategy, dataset.element_spec)
    assert model.optimizer.built and len(model.optimizer.variables) > 1
    before = [w.copy() for w in model.get_weights()]
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    assert int(model.optimizer.iterations.numpy()) == 5
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_averaging_logs_across_workers_patches_keras_once_and_leaves_other_strategies_alone(monkeypatch):
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    original = trainer.reduce_per_replica
    monkeypatch.setattr(trainer, "reduce_per_replica", original)  # undone after the test
    keras_compat.average_logs_across_workers()
    patched = trainer.reduce_per_replica
    assert patched is not original and patched.kcaptcha_patched
    keras_compat.average_logs_across_workers()
    assert trainer.reduce_per_replica is patched  # not wrapped twice
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    logs = {"loss": tf.constant(1.5)}
    assert patched(logs, strategy, "auto") == original(logs, strategy, "auto") == logs


@pytest.mark.parametrize("version, inside", [("3.9.2", False), ("3.10.0", True), ("3.15.1", True), ("3.16.0", False)])
def test_the_range_is_the_releases_tested(version, inside):
    assert (Version(version) in SpecifierSet(",".join(keras_compat.TESTED_KERAS))) == inside
