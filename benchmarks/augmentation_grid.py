"""Draws a grid of training samples as the model sees them: each row the same captchas, augmented anew.

    python benchmarks/augmentation_grid.py --flagfile=experiments/alnum.flags --output=docs/augmentation.png

The first row is the captchas as drawn; the others are what `kcaptcha.data.augment.Augmenter` makes of them
at the configured `--augment` strength (a new draw per image and per row).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from kcaptcha.flags import config_from_flags, define_flags  # noqa: E402

define_flags()
flags.DEFINE_string("output", "docs/augmentation.png", "Where to write the PNG.")
flags.DEFINE_integer("columns", 6, "Captchas per row.")
flags.DEFINE_integer("rows", 5, "Augmented rows under the original one.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf
    from PIL import Image, ImageDraw

    from kcaptcha.data.augment import Augmenter
    from kcaptcha.data.generate import CaptchaRenderer

    config = config_from_flags(FLAGS)
    renderer = CaptchaRenderer.from_config(config, seed=config.seed + 7)
    images = np.stack([np.asarray(renderer.render(i)[1].convert("L"), np.float32) / 255.0
                       for i in range(FLAGS.columns)])[..., None]
    augmenter = Augmenter(config.augment, seed=config.seed)
    rows = [images] + [augmenter(tf.constant(images)).numpy() for _ in range(FLAGS.rows)]
    gap = 4
    height, width = config.height, config.width
    canvas = Image.new("L", (FLAGS.columns * (width + gap) - gap, len(rows) * (height + gap) + 14), 255)
    ImageDraw.Draw(canvas).text((2, 0), f"first row: as drawn (style={config.style}); below: augment={config.augment}",
                                fill=0)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            canvas.paste(Image.fromarray((image[..., 0] * 255).astype(np.uint8)),
                         (c * (width + gap), 14 + r * (height + gap)))
    canvas.save(FLAGS.output)
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
