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

flags.DEFINE_string("model", "alnum", "The model to start from (luma, ctc).")
flags.DEFINE_integer("captchas", 60_000, "RGB training captchas, rendered once and shared by both arms.")
flags.DEFINE_integer("seed", 23, "Their seed (not a held-out one).")
flags.DEFINE_float("minutes", 22.0, "Training time per arm.")
flags.DEFINE_float("learning_rate", 3e-4, "Adam's rate, constant, with an EMA of the weights (0.999).")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("gray_units", 8, "Hidden units of the colour arm's per-pixel gray.")
flags.DEFINE_list("arms", ["colour", "luma"], "Which arms to train, in order.")
flags.DEFINE_list("test_seeds", ["20261129", "20261201"], "Held-out seeds (bin/generate's).")
flags.DEFINE_integer("count", 2000, "Held-out captchas per seed.")
FLAGS = flags.FLAGS

LUMA = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale's weights, as kcaptcha.images reads


def render(config, seed: int, count: int):
    """(labels, uint8 RGB [n, h, w, 3], looks) of captchas 0.. of `config`'s task at `seed`, in parallel."""
    import numpy as np

    from kcaptcha.generate import CaptchaRenderer, render_arrays

    renderer = CaptchaRenderer.from_config(config, seed=seed)
    pictures, labels = render_arrays(renderer, count, colour=True)
    return labels, pictures, np.array([renderer.look(i) for i in range(count)])


def colour_model(base, height: int, width: int, units: int):
    """`base` behind a learned per-pixel gray that starts as luma."""
    import keras
    import numpy as np

    inputs = keras.Input((height, width, 3), name="rgb")
    hidden_layer = keras.layers.Conv2D(units, 1, activation="relu", name="gray_hidden")
    out_layer = keras.layers.Conv2D(1, 1, name="gray_out")
    model = keras.Model(inputs, base(out_layer(hidden_layer(inputs))), name="colour_probe")
    kernel, bias = hidden_layer.get_weights()
    kernel[0, 0, :, 0], bias[0] = LUMA, 0.0
    hidden_layer.set_weights([kernel, bias])
    out_kernel = np.zeros((1, 1, units, 1), np.float32)
    out_kernel[0, 0, 0, 0] = 1.0
    out_layer.set_weights([out_kernel, np.zeros(1, np.float32)])
    return model


def to_input(pictures, arm: str):
    """uint8 RGB [n, h, w, 3] -> the arm's float32 input in [0, 1]."""
    import numpy as np

    rgb = pictures.astype(np.float32) * (1.0 / 255.0)
    return rgb if arm == "colour" else (rgb @ np.asarray(LUMA, np.float32))[..., None]


def misreads(model, pictures, labels, looks, arm, metadata, vocab):
    import numpy as np

    from kcaptcha import decoding
    from kcaptcha.generate import LOOK_KCAPTCHA

    logits = model.predict(to_input(pictures, arm), batch_size=256, verbose=0)
    wrong = np.array([p.text != label for p, label in zip(decoding.decode(logits, metadata["output"], vocab),
                                                           labels)])
    own = looks == LOOK_KCAPTCHA
    return int(wrong.sum()), int(wrong[own].sum()), int(wrong[~own].sum())


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from kcaptcha import saving
    from kcaptcha.config import Config
    from kcaptcha.export import load_keras_model
    from kcaptcha.models import ctc
    from kcaptcha.vocab import Vocab

    model_dir = saving.resolve_model_dir(FLAGS.model)
    metadata = saving.read_metadata(model_dir)
    config = Config.from_dict(metadata["config"])
    vocab = Vocab.from_config(config)
    started = time.monotonic()
    labels, pictures, _ = render(config, FLAGS.seed, FLAGS.captchas)
    tests = {seed: render(config, int(seed), FLAGS.count) for seed in FLAGS.test_seeds}
    print(f"rendered {len(labels)} training and {len(tests) * FLAGS.count} held-out captchas in "
          f"{time.monotonic() - started:.0f} s", flush=True)
    ids = vocab.encode_many(labels).astype(np.int32)

    print("| arm | steps | " + " | ".join(f"seed {s}: misread (own look / library look), before → after"
                                         for s in FLAGS.test_seeds) + " |")
    print("|---|---|" + "---|" * len(FLAGS.test_seeds), flush=True)
    for arm in FLAGS.arms:
        keras.utils.set_random_seed(FLAGS.seed)
        base = load_keras_model(model_dir)
        model = colour_model(base, config.height, config.width, FLAGS.gray_units) if arm == "colour" else base
        before = {s: misreads(model, t[1], t[0], t[2], arm, metadata, vocab) for s, t in tests.items()}
        inputs = tf.constant(pictures if arm == "colour" else
                             np.round(to_input(pictures, arm) * 255.0).astype(np.uint8))
        targets = tf.constant(ids)

        def gather(random):
            rows = tf.math.floormod(random, len(labels))
            return tf.cast(tf.gather(inputs, rows), tf.float32) * (1.0 / 255.0), tf.gather(targets, rows)

        dataset = tf.data.Dataset.random(seed=FLAGS.seed).batch(FLAGS.batch_size).map(gather).prefetch(2)
        model.compile(optimizer=keras.optimizers.Adam(FLAGS.learning_rate, use_ema=True, ema_momentum=0.999),
                      loss=ctc.loss(config))
        deadline = time.monotonic() + FLAGS.minutes * 60

        class Deadline(keras.callbacks.Callback):
            steps = 0

            def on_train_batch_end(self, batch, logs=None):
                Deadline.steps += 1
                if time.monotonic() > deadline:
                    self.model.stop_training = True

        history = model.fit(dataset, steps_per_epoch=500, epochs=10_000, callbacks=[Deadline()], verbose=0)
        steps = Deadline.steps
        model.optimizer.finalize_variable_values(model.trainable_variables)  # the EMA weights
        after = {s: misreads(model, t[1], t[0], t[2], arm, metadata, vocab) for s, t in tests.items()}
        cells = [f"{b[0]} ({b[1]} / {b[2]}) → **{a[0]}** ({a[1]} / {a[2]})"
                 for b, a in zip(before.values(), after.values())]
        losses = ", ".join(f"{v:.3f}" for v in history.history["loss"][::4])
        print(f"| {arm} | {steps} | " + " | ".join(cells) + " |", flush=True)
        print(f"  loss every 2,000 steps: {losses}", flush=True)


if __name__ == "__main__":
    app.run(main)
