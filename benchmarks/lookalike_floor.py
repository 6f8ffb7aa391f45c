"""How well can anything read the `captcha` library's characters one at a time? A floor under alnum's error.

    python benchmarks/lookalike_floor.py                   # 37 fonts found with chromium installed

The `captcha` library draws each character on its own: a font and size drawn at random, the glyph cropped
to its ink, rotated, and stretched into the box the font gives that character (`_draw_character`). For
`o` that box is as tall as for `0`, so both come out as ovals of the same height. This script draws single
characters exactly so (the library's own function, the fonts and sizes `--style=varied` uses for the
task), centres each on a white canvas of fixed size (no rescaling: the size stays a cue), and trains a
small CNN on plenty of them. Reading one clean character is easier than reading it inside a captcha
(no neighbours overlapping, no squeeze, no noise), so the CNN's error on fresh characters is a rough floor
under a captcha reader's per-character error.

It prints each character's error, the most confused pairs, `o`/`0` accuracy by font, and what those
errors alone would leave of whole-image accuracy on the alnum held-out set (the captchas drawn in the
library's look; those in kcaptcha's own look are counted as read right).
"""

import collections
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string("charset", "0123456789abcdefghijklmnopqrstuvwxyz", "Characters.")
flags.DEFINE_integer("width", 160, "Captcha width the fonts are sized for (as the alnum task).")
flags.DEFINE_integer("height", 60, "Captcha height the fonts are sized for.")
flags.DEFINE_integer("train_per_char", 2000, "Training characters of each class.")
flags.DEFINE_integer("test_per_char", 1000, "Test characters of each class (other seeds).")
flags.DEFINE_integer("epochs", 8, "Training epochs.")
flags.DEFINE_float("squeeze", 1.0, "Narrow each character to this share of its width first, as the library "
                   "narrows a whole captcha wider than the image (160 / the drawn width: about 0.6-0.8 for 4-6 "
                   "characters at 160x60).")
flags.DEFINE_integer("heldout_count", 2000, "Held-out captchas the floor is applied to.")
flags.DEFINE_integer("heldout_seed", 20_261_129, "Their seed (the alnum tables' held-out set).")
flags.DEFINE_integer("min_length", 4, "Held-out label lengths, as the alnum task.")
flags.DEFINE_integer("max_length", 6, "")
flags.DEFINE_string("output_json", None, "Write the results here too.")
FLAGS = flags.FLAGS

CANVAS = (64, 80)  # width, height: the largest character the library draws at height 60 is 60 x 74


def draw_characters(renderer, chars: str, per_char: int, seed: str, squeeze: float = 1.0):
    """Single characters as the `captcha` library draws them: (images [n, 80, 64] uint8, labels, fonts)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from kcaptcha.data import generate

    library = renderer._captcha  # the ImageCaptcha the renderer draws its `captcha` look with
    draw = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    images = np.full((per_char * len(chars), CANVAS[1], CANVAS[0]), 255, np.uint8)
    labels, fonts = [], []
    for n in range(per_char):
        rng = generate.SeededSecrets(f"lookalike/{seed}/{n}")
        chosen = []
        choice = rng.choice
        rng.choice = lambda seq: chosen.append(choice(seq)) or chosen[-1]  # remember the font drawn
        with generate._seeded_captcha(rng):
            for k, char in enumerate(chars):
                glyph = library._draw_character(char, draw, (0, 0, 0))
                if squeeze != 1.0:
                    glyph = glyph.resize((max(1, round(glyph.width * squeeze)), glyph.height))
                canvas = Image.new("L", CANVAS, 255)
                glyph = glyph.crop((0, 0, min(glyph.width, CANVAS[0]), min(glyph.height, CANVAS[1])))
                canvas.paste(0, ((CANVAS[0] - glyph.width) // 2, (CANVAS[1] - glyph.height) // 2),
                             glyph.split()[3])
                images[n * len(chars) + k] = np.asarray(canvas)
                labels.append(k)
                fonts.append(os.path.basename(chosen[-1].path))
    return images, np.array(labels), fonts


def classifier(classes: int):
    import keras

    inputs = keras.Input((CANVAS[1], CANVAS[0], 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for filters in (16, 32, 64, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.3)(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def main(argv):
    del argv
    import keras
    import numpy as np

    from kcaptcha.data import generate

    keras.utils.set_random_seed(0)
    chars = FLAGS.charset
    renderer = generate.CaptchaRenderer(chars, FLAGS.min_length, FLAGS.max_length, FLAGS.width, FLAGS.height,
                                        seed=FLAGS.heldout_seed, style="varied")
    print(f"{len(renderer.fonts)} fonts: {', '.join(generate.font_names(renderer.fonts))}", flush=True)
    started = time.time()
    train_x, train_y, _ = draw_characters(renderer, chars, FLAGS.train_per_char, "train", FLAGS.squeeze)
    test_x, test_y, test_fonts = draw_characters(renderer, chars, FLAGS.test_per_char, "test", FLAGS.squeeze)
    print(f"drew {len(train_y)} training and {len(test_y)} test characters in {time.time() - started:.0f} s",
          flush=True)

    model = classifier(len(chars))
    steps = FLAGS.epochs * int(np.ceil(len(train_y) / 128))
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, steps)),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    started = time.time()
    model.fit(train_x[..., None], train_y, batch_size=128, epochs=FLAGS.epochs, verbose=2,
              validation_data=(test_x[..., None], test_y))
    print(f"trained in {time.time() - started:.0f} s", flush=True)
    train_read = model.predict(train_x[..., None], batch_size=512, verbose=0).argmax(-1)
    read = model.predict(test_x[..., None], batch_size=512, verbose=0).argmax(-1)
    train_accuracy, accuracy = float(np.mean(train_read == train_y)), float(np.mean(read == test_y))
    print(f"single characters: {train_accuracy:.4f} of the training ones, {accuracy:.4f} of fresh ones")

    error = {c: float(np.mean(read[test_y == k] != k)) for k, c in enumerate(chars)}
    print("error by character (fresh):", ", ".join(f"{c} {e:.3f}" for c, e in
                                                    sorted(error.items(), key=lambda item: -item[1])[:12]))
    pairs = collections.Counter((chars[t], chars[r]) for t, r in zip(test_y, read) if t != r)
    print("most confused (truth->read, of", FLAGS.test_per_char, "each):",
          ", ".join(f"{t}->{r} x{n}" for (t, r), n in pairs.most_common(12)))

    by_font = collections.defaultdict(lambda: [0, 0])
    for t, r, font in zip(test_y, read, test_fonts):
        if chars[t] in "o0":
            by_font[font][0] += int(t == r)
            by_font[font][1] += 1
    print("o/0 read right, by font (worst first):", ", ".join(
        f"{font} {right / total:.2f}" for font, (right, total) in sorted(by_font.items(),
                                                                          key=lambda item: item[1][0] / item[1][1])))

    library, ceiling = 0, 0.0
    for index in range(FLAGS.heldout_count):
        if renderer.look(index) != generate.LOOK_CAPTCHA_LIBRARY:
            ceiling += 1.0
            continue
        library += 1
        ceiling += float(np.prod([1.0 - error[c] for c in renderer.label(index)]))
    print(f"held-out (seed {FLAGS.heldout_seed}): {library} of {FLAGS.heldout_count} captchas in the library's "
          f"look; these single-character errors alone would leave at most {ceiling / FLAGS.heldout_count:.4f} "
          f"whole-image accuracy ({ceiling_library(ceiling, FLAGS.heldout_count, library):.4f} of the library's "
          "look)")
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump({"fonts": len(renderer.fonts), "train_accuracy": train_accuracy, "accuracy": accuracy,
                       "error": error, "pairs": {f"{t}->{r}": n for (t, r), n in pairs.most_common(30)},
                       "o0_by_font": {font: right / total for font, (right, total) in by_font.items()},
                       "heldout_library_look": library, "heldout_ceiling": ceiling / FLAGS.heldout_count}, f,
                      indent=1)


def ceiling_library(ceiling: float, count: int, library: int) -> float:
    """The ceiling over the library's look alone, from the ceiling over every held-out captcha."""
    return (ceiling - (count - library)) / library if library else 1.0


if __name__ == "__main__":
    app.run(main)
