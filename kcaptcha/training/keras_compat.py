"""The one place where kcaptcha reaches past Keras' public API, for four things Keras offers no public way to do.

Each workaround relies on Keras internals that were read, and are the same, in every release of
`TESTED_KERAS` (setup.cfg pins the same range, and tests/test_keras_compat.py fails on a Keras outside it
or whose internals moved), so that a new Keras release fails a test instead of silently breaking training:

- `restore_backup`: a `keras.callbacks.BackupAndRestore` backup is restored only inside `fit`; a run must know
  its step before (to continue its synthetic stream, and not to train a finished run again).
- `BackupAtEnd`: a `BackupAndRestore` that also backs up when `fit` ends, so that a run reopened for more steps
  goes on from the step it stopped at, not from its last periodic backup (up to `save_freq - 1` steps before).
- `build_before_fit`: under `MultiWorkerMirroredStrategy`, `fit` builds the loss and optimizer state by
  all-reducing the first (images, labels) batch, which that strategy cannot reduce (a tuple).
- `average_logs_across_workers`: under `MultiWorkerMirroredStrategy`, `fit` reduces every step's logs with
  `axis=0`, which fails on a scalar ("Invalid reduction dimension 0"; keras-team/keras#20585).

Everything else in kcaptcha uses Keras' public API only.
"""

import os

import keras

# The internals below are the same code in Keras 3.7 to 3.15; kcaptcha's training and these workarounds were
# tested on 3.10.0 and 3.15.1 (3.9 and earlier lack layers kcaptcha uses, such as RandomGaussianBlur).
TESTED_KERAS = (">=3.10", "<3.16")


def restore_backup(model, backup_dir: str) -> None:
    """Loads the `BackupAndRestore` backup in `backup_dir` into `model`, exactly as `fit` will when it starts.

    Runs the callback's own `on_train_begin` outside `fit`, so that the backup is read by Keras' code (its file
    names, and its fall-back to the previous backup when the latest is damaged: `double_checkpoint`). It also
    sets the model's private `_initial_epoch`, the epoch `fit` then starts from, to what `fit`'s own
    `BackupAndRestore` sets it to. Nothing happens when there is no backup.
    """
    backup = keras.callbacks.BackupAndRestore(os.fspath(backup_dir))
    backup.set_model(model)
    backup.on_train_begin()


class BackupAtEnd(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` (every `save_freq` steps, never deleted) that also backs up when fit
    ends, by whatever means (its steps, a time cap, a plateau).

    Keras' private `_save_model` writes the backup with the epoch to resume from (the one after the last
    ended), the same files and the same `double_checkpoint` copy as its periodic backups.
    """

    def __init__(self, backup_dir: str, save_freq: int):
        super().__init__(os.fspath(backup_dir), save_freq=save_freq, double_checkpoint=True, delete_checkpoint=False)

    def on_train_end(self, logs=None):
        self._save_model()
        super().on_train_end(logs)


def build_before_fit(model, strategy, element_spec) -> None:
    """Builds `model`'s loss and optimizer state from the shapes of its batches, and has its `fit` skip that step.

    Keras' fit builds them from its first batch, all-reduced to a mean across replicas (the private
    `_maybe_symbolic_build`); `MultiWorkerMirroredStrategy` cannot reduce an (images, labels) tuple. The
    private `_symbolic_build` builds the same state from shapes alone, so we call it with this worker's
    batch spec and make `_maybe_symbolic_build` a no-op on this model.
    """
    with strategy.scope():
        model._symbolic_build(data_batch=element_spec)
    model._maybe_symbolic_build = lambda *args, **kwargs: None


def average_logs_across_workers() -> None:
    """Makes Keras' fit average scalar logs (the loss) across workers under `MultiWorkerMirroredStrategy`.

    Its `reduce_per_replica` reduces every step's logs with `axis=0`, which fails on a scalar; the mean over
    replicas is what it means. Only the multi-worker "mean" path changes; the rest stays Keras' own. Patches
    `keras.src.backend.tensorflow.trainer.reduce_per_replica`, once per process.
    """
    from keras.src.backend.tensorflow import trainer

    original = trainer.reduce_per_replica
    if getattr(original, "kcaptcha_patched", False):
        return
    import tensorflow as tf

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return keras.tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None)
                if isinstance(v, tf.distribute.DistributedValues) else v, values)
        return original(values, strategy, reduction)

    reduce_per_replica.kcaptcha_patched = True
    trainer.reduce_per_replica = reduce_per_replica
