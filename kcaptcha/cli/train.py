"""bin/train --flagfile=experiments/digits.flags [--model_dir=runs/digits] [--save_dir=...] [--fresh]

Trains a recogniser (on-the-fly synthetic captchas unless --train_dir is given), resuming from the
backup in --model_dir, and saves the best model to --save_dir (default ./saved_models/<name>), which it
never does over a model another run saved (a shipped one included) unless given --overwrite. It ends with
one line; the run folder's summary.json holds the details.

On several machines: the same command on each, with --strategy=multi_worker and TF_CONFIG naming the
cluster and this worker (docs/SCALING.md); only the chief saves and exports.
"""

import os
import sys
import time

from absl import flags

from kcaptcha.cli import common
from kcaptcha.flags import define_flags

define_flags()
flags.DEFINE_string("model_dir", None, "Run folder for checkpoints and logs (default: runs/<name>).")
flags.DEFINE_string("save_dir", None, "Where to save the trained model (default: saved_models/<name> in the "
                    "working folder).")
flags.DEFINE_bool("fresh", False, "Ignore the backup in --model_dir and start over.")
flags.DEFINE_bool("overwrite", False, "Replace the model in --save_dir even if another run saved it.")
flags.DEFINE_bool("export", True, "Also export the saved model to ONNX (float32 and int8), as bin/export does.")
FLAGS = flags.FLAGS


def main(argv):
    started = time.monotonic()
    common.no_arguments(argv)
    config = common.config_or_exit()
    from kcaptcha.export import saving
    from kcaptcha.training.resolve import previous_run_id, resolve

    given = common.given_fields()
    try:
        config, notes = resolve(config, given)
    except ValueError as error:
        raise common.UsageError(str(error)) from None
    for note in notes:
        print(note, flush=True)
    model_dir = FLAGS.model_dir or os.path.join("runs", config.name)
    save_dir = FLAGS.save_dir or os.path.join("saved_models", config.name)
    saving.check_can_save(save_dir, previous_run_id(model_dir, FLAGS.fresh), FLAGS.overwrite)  # before the slow imports
    print("Loading TensorFlow ...", flush=True)
    import tensorflow as tf

    from kcaptcha.training.train import train

    try:
        summary = train(config, model_dir, fresh=FLAGS.fresh, save_dir=save_dir, overwrite=FLAGS.overwrite,
                        given=config.field_names())  # resolved above
    except (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.DeadlineExceededError) as error:
        if config.strategy != "multi_worker":
            raise
        raise RuntimeError(f"lost contact with another worker ({error.message.splitlines()[0]}). Restart every "
                           "worker with the same command: training resumes from the last backup.") from None
    if FLAGS.export and "saved_to" in summary:  # only the chief saves
        from kcaptcha.export.onnx import export_onnx

        try:
            summary["export"] = export_onnx(summary["saved_to"])
        except Exception as error:  # the trained model is saved; only the optional ONNX copy failed
            summary["export"] = f"failed: {type(error).__name__}: {error} (the Keras model is saved; "\
                                "retry with bin/export)"
            print(f"warning: ONNX export failed: {error}", file=sys.stderr)
    from kcaptcha.training.train import summary_line, write_summary

    write_summary(summary)
    print(summary_line(summary, time.monotonic() - started), flush=True)


def run():
    common.run_main(main)


if __name__ == "__main__":
    run()
