"""bin/train --flagfile=experiments/digits.flags [--model_dir=runs/digits] [--save_dir=...] [--fresh]

Trains a recogniser (on-the-fly synthetic captchas unless --train_dir is given), resuming from the
backup in --model_dir, and saves the best model to --save_dir (default saved_models/<name>), which it
never does over a model another run saved (a shipped one included) unless given --overwrite.

On several machines: the same command on each, with --strategy=multi_worker and TF_CONFIG naming the
cluster and this worker (docs/SCALING.md); only the chief saves and exports.
"""

import json
import os
import sys

from absl import flags

from kcaptcha.cli import common
from kcaptcha.flags import define_flags

define_flags()
flags.DEFINE_string("model_dir", None, "Run folder for checkpoints and logs (default: runs/<name>).")
flags.DEFINE_string("save_dir", None, "Where to save the trained model (default: saved_models/<name>).")
flags.DEFINE_bool("fresh", False, "Ignore the backup in --model_dir and start over.")
flags.DEFINE_bool("overwrite", False, "Replace the model in --save_dir even if another run saved it.")
flags.DEFINE_bool("export", True, "Also export the saved model to ONNX (float32 and int8), as bin/export does.")
FLAGS = flags.FLAGS


def main(argv):
    common.no_arguments(argv)
    config = common.config_or_exit()
    from kcaptcha.data import inventory
    from kcaptcha.training import transfer
    from kcaptcha.training.train import train

    given = common.given_fields()
    config, from_source = transfer.fill_from_source(config, given)
    config, from_folder = inventory.fill_from_folder(config, given)
    for note in from_source + from_folder:
        print(note, flush=True)
    try:
        config.validate()
    except ValueError as error:
        raise common.UsageError(str(error)) from None

    import tensorflow as tf

    try:
        summary = train(config, FLAGS.model_dir or os.path.join("runs", config.name), fresh=FLAGS.fresh,
                        save_dir=FLAGS.save_dir or os.path.join("saved_models", config.name),
                        overwrite=FLAGS.overwrite)
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
    if config.train_dir and "saved_to" in summary:
        print(f"Compare reading with --tta=8 (bin/predict, bin/evaluate, bin/serve; about twice the work) on your "
              f"test images: bin/evaluate --model={summary['saved_to']} --tta=8 TEST_FOLDER. On captcha_images_v2 "
              f"it cut the misreads of models fine-tuned with --init_from=alnum by a third to two thirds, of others "
              f"by a tenth.",
              flush=True)
    print(json.dumps(summary, indent=2))


def run():
    common.run_main(main)


if __name__ == "__main__":
    run()
