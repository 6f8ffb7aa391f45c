"""Would a colour input read kcaptcha's dotted captchas better? A bounded probe, not a product path.

    python benchmarks/colour_probe.py --model=alnum --minutes=22

kcaptcha reads grayscale, where kcaptcha's coloured dots are as dark as its text (misread_causes.py: dots
cause a third of the shipped alnum's misreads). This renders `--captchas` RGB captchas of the model's task
(`--seed`) and fine-tunes two copies of the model on them, for `--minutes` each, with the same rate, batches
and order:
- luma: the model as it is, on the captchas' ITU-R 601 luma (as kcaptcha reads them);
- colour: the model behind a learned per-pixel gray, RGB -> 1x1 convolution to `--gray_units` units with
  ReLU -> 1x1 convolution to one channel. It starts as exactly luma (unit 0 computes luma and is the only
  one the output weighs), so it reads as the model does until it trains; it can learn, say, to lighten
  saturated colours. On 160x60 it adds some 0.3 M multiply-adds to the network's tens of millions.
Both then read the held-out captchas of `--test_seeds` (before and after), counting misreads per look.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from kcaptcha.files import atomic_path  # noqa: E402
from kcaptcha.data.images import LUMA_WEIGHTS  # noqa: E402

flags.DEFINE_string("model", "alnum", "The model to start from (luma, ctc).")
flags.DEFINE_integer("captchas", 60_000, "RGB training captchas, rendered once and shared by both arms.")
flags.DEFINE_integer("seed", 23, "Their seed (not a held-out one).")
flags.DEFINE_float("minutes", 22.0, "Training time per arm.")
flags.DEFINE_float("learning_rate", 3e-4, "Adam's rate, constant, with an EMA of the weights (0.999).")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("gray_units", 8, "Hidden units of the colour arm's per-pixel gray.")
flags.DEFINE_list("arms", ["colour", "luma"], "Which arms to train, in order.")
flags.DEFINE_enum("source", "fixed", ["fixed", "pool"], "fixed: `--captchas` rendered once and shared by the "
                  "arms; pool: each arm trains from its own kcaptcha.data.pool.CaptchaPool of `--pool_size` captchas of "
                  "`--seed`, renewed in the background (RGB for the colour arm), as bin/train does.")
flags.DEFINE_integer("pool_size", 20_000, "Captchas in the pool (--source=pool).")
flags.DEFINE_integer("gray_kernel", 1, "Kernel size of the colour arm's hidden layer: 1 is a per-pixel gray, 3 lets "
                     "it see each pixel's neighbours (a dot's colour against the stroke around it).")
flags.DEFINE_enum("schedule", "constant", ["constant", "cosine"], "The rate over each arm's `--minutes`: constant, "
                  "or a cosine decay to zero by elapsed time (by steps with --all_steps).")
flags.DEFINE_float("frontend_minutes", 0.0, "First train only the colour arm's gray layers for this long (of "
                   "`--minutes`), at 3x the rate, with the model behind them frozen.")
flags.DEFINE_integer("all_steps", 0, "If set, the phase that trains everything runs this many steps instead of its "
                     "minutes, and its cosine follows the steps: a control matched in steps to an earlier run, "
                     "whatever else loads the machine.")
flags.DEFINE_string("save_dir", None, "Save each arm's trained model (EMA weights) as <save_dir>/<arm>.keras; "
                    "its weights are also saved there every 15 minutes while it trains.")
flags.DEFINE_list("test_seeds", ["20261129", "20261201"], "Held-out seeds (bin/generate's).")
flags.DEFINE_integer("count", 2000, "Held-out captchas per seed.")
FLAGS = flags.FLAGS


def render(config, seed: int, count: int):
    """(labels, uint8 RGB [n, h, w, 3], looks) of captchas 0.. of `config`'s task at `seed`, in parallel."""
    import numpy as np

    from kcaptcha.data.generate import CaptchaRenderer, render_arrays

    renderer = CaptchaRenderer.from_config(config, seed=seed)
    pictures, labels = render_arrays(renderer, count, colour=True)
    return labels, pictures, np.array([renderer.look(i) for i in range(count)])


def colour_model(base, height: int, width: int, units: int, kernel_size: int = 1):
    """`base` behind a learned gray (per pixel, or from each `kernel_size`² neighbourhood) that starts as luma."""
    import keras
    import numpy as np

    inputs = keras.Input((height, width, 3), name="rgb")
    hidden_layer = keras.layers.Conv2D(units, kernel_size, padding="same", activation="relu", name="gray_hidden")
    out_layer = keras.layers.Conv2D(1, 1, name="gray_out")
    model = keras.Model(inputs, base(out_layer(hidden_layer(inputs))), name="colour_probe")
    kernel, bias = hidden_layer.get_weights()
    centre = kernel_size // 2
    kernel[:, :, :, 0] = 0.0
    kernel[centre, centre, :, 0], bias[0] = LUMA_WEIGHTS, 0.0
    hidden_layer.set_weights([kernel, bias])
    out_kernel = np.zeros((1, 1, units, 1), np.float32)
    out_kernel[0, 0, 0, 0] = 1.0
    out_layer.set_weights([out_kernel, np.zeros(1, np.float32)])
    return model


def to_input(pictures, arm: str):
    """uint8 RGB [n, h, w, 3] -> the arm's float32 input in [0, 1]."""
    import numpy as np

    rgb = pictures.astype(np.float32) * (1.0 / 255.0)
    return rgb if arm == "colour" else (rgb @ np.asarray(LUMA_WEIGHTS, np.float32))[..., None]


def misread_mask(model, pictures, labels, arm, metadata, vocab):
    """A boolean per captcha: whether the arm's `model` misreads it."""
    import numpy as np

    from kcaptcha.reading import decoding

    logits = model.predict(to_input(pictures, arm), batch_size=256, verbose=0)
    return np.array([p.text != label for p, label in zip(decoding.decode(logits, metadata["output"], vocab), labels)])


def misreads(model, pictures, labels, looks, arm, metadata, vocab):
    """(all, own look, library look) misread counts."""
    from kcaptcha.data.generate import LOOK_KCAPTCHA

    wrong = misread_mask(model, pictures, labels, arm, metadata, vocab)
    own = looks == LOOK_KCAPTCHA
    return int(wrong.sum()), int(wrong[own].sum()), int(wrong[~own].sum())


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from kcaptcha.export import saving
    from kcaptcha.config import Config
    from kcaptcha.export.onnx import load_keras_model
    from kcaptcha.models import ctc
    from kcaptcha.data.pool import CaptchaPool
    from kcaptcha.reading.vocab import Vocab

    model_dir = saving.resolve_model_dir(FLAGS.model)
    metadata = saving.read_metadata(model_dir)
    config = Config.from_dict(metadata["config"])
    vocab = Vocab.from_config(config)
    started = time.monotonic()
    if FLAGS.source == "fixed":
        labels, pictures, _ = render(config, FLAGS.seed, FLAGS.captchas)
        ids = vocab.encode_many(labels).astype(np.int32)
    tests = {seed: render(config, int(seed), FLAGS.count) for seed in FLAGS.test_seeds}
    print(f"rendered the captchas in {time.monotonic() - started:.0f} s", flush=True)

    print("| arm | steps | " + " | ".join(f"seed {s}: misread (own look / library look), before → after"
                                         for s in FLAGS.test_seeds) + " |")
    print("|---|---|" + "---|" * len(FLAGS.test_seeds), flush=True)
    for arm in FLAGS.arms:
        keras.utils.set_random_seed(FLAGS.seed)
        base = load_keras_model(model_dir)
        model = (colour_model(base, config.height, config.width, FLAGS.gray_units, FLAGS.gray_kernel)
                 if arm == "colour" else base)
        before = {s: misreads(model, t[1], t[0], t[2], arm, metadata, vocab) for s, t in tests.items()}
        pool = None
        if FLAGS.source == "pool":
            pool = CaptchaPool(config.replace(seed=FLAGS.seed), FLAGS.pool_size, seed=FLAGS.seed,
                               colour=arm == "colour").start()
            dataset = pool.dataset(FLAGS.batch_size, seed=FLAGS.seed).map(
                lambda images, ids: (tf.cast(images, tf.float32) * (1.0 / 255.0), ids)).prefetch(2)
        else:
            inputs = tf.constant(pictures if arm == "colour" else
                                 np.round(to_input(pictures, arm) * 255.0).astype(np.uint8))
            targets = tf.constant(ids)

            def gather(random):
                rows = tf.math.floormod(random, len(labels))
                return tf.cast(tf.gather(inputs, rows), tf.float32) * (1.0 / 255.0), tf.gather(targets, rows)

            dataset = tf.data.Dataset.random(seed=FLAGS.seed).batch(FLAGS.batch_size).map(gather).prefetch(2)
        steps = 0
        arm_start = time.monotonic()
        phases = [("all", FLAGS.minutes * 60)]
        if arm == "colour" and FLAGS.frontend_minutes > 0:
            phases = [("frontend", FLAGS.frontend_minutes * 60), ("all", (FLAGS.minutes - FLAGS.frontend_minutes) * 60)]
        for phase, seconds in phases:
            base.trainable = phase == "all"
            rate = FLAGS.learning_rate * (3.0 if phase == "frontend" else 1.0)
            model.compile(optimizer=keras.optimizers.Adam(rate, use_ema=True, ema_momentum=0.999),
                          loss=ctc.loss(config))
            phase_start = time.monotonic()
            deadline = phase_start + seconds
            by_steps = phase == "all" and FLAGS.all_steps > 0

            class Clock(keras.callbacks.Callback):
                """Stops at the phase's deadline or step count; sets the rate by either; saves weights now and then."""
                count, saved = 0, time.monotonic()

                def on_train_batch_begin(self, batch, logs=None):
                    if FLAGS.schedule == "cosine" and phase == "all":
                        done = min(1.0, Clock.count / FLAGS.all_steps if by_steps else
                                   (time.monotonic() - phase_start) / seconds)
                        self.model.optimizer.learning_rate.assign(rate * 0.5 * (1.0 + np.cos(np.pi * done)))

                def on_train_batch_end(self, batch, logs=None):
                    Clock.count += 1
                    now = time.monotonic()
                    if FLAGS.save_dir and now - Clock.saved > 900:
                        with atomic_path(os.path.join(FLAGS.save_dir, f"{arm}.partial.weights.h5")) as tmp:
                            self.model.save_weights(tmp)
                        Clock.saved = now
                    if (Clock.count >= FLAGS.all_steps) if by_steps else now > deadline:
                        self.model.stop_training = True

            history = model.fit(dataset, steps_per_epoch=500, epochs=10_000, callbacks=[Clock()], verbose=0)
            steps += Clock.count
            model.optimizer.finalize_variable_values(model.trainable_variables)  # the EMA weights
            print(f"  {arm}, {phase}: {Clock.count} steps in {time.monotonic() - phase_start:.0f} s, loss every "
                  f"2,000 steps: " + ", ".join(f"{v:.3f}" for v in history.history["loss"][::4]), flush=True)
        if pool is not None:
            pool.close()
        base.trainable = True
        after = {s: misreads(model, t[1], t[0], t[2], arm, metadata, vocab) for s, t in tests.items()}
        if FLAGS.save_dir:
            with atomic_path(os.path.join(FLAGS.save_dir, f"{arm}.keras")) as tmp:
                model.save(tmp)
        cells = [f"{b[0]} ({b[1]} / {b[2]}) → **{a[0]}** ({a[1]} / {a[2]})"
                 for b, a in zip(before.values(), after.values())]
        print(f"| {arm} | {steps} | " + " | ".join(cells) + f" |   ({time.monotonic() - arm_start:.0f} s)", flush=True)


if __name__ == "__main__":
    app.run(main)
