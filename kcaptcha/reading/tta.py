"""Test-time augmentation: read each image as it is and in a few slightly warped copies, then vote.

A model trained on a few hundred real captchas often reads an image right at one alignment and wrong at
another (a letter lost in `nn`, `m` read as `rn`). Reading `count` copies warped by small fixed affine
transforms (rotation, scale, shear and shift, half the ranges training augments with) and keeping the text
with the highest summed confidence fixes many of those. It is on by default (`DEFAULT_COPIES`). Measured on captcha_images_v2 models fine-tuned on
200 labels: see docs/REAL_DATA.md. The cost is `count` more model runs per image read in copies: by default
only those the model reads with a confidence under `UNSURE_BELOW`, a tenth to a fifth of them.

The warps are the same for every image and every call, so a reading does not depend on the batch. numpy
and PIL only: it runs beside the ONNX backend without TensorFlow.
"""

import math
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image

from kcaptcha.reading.decoding import Prediction

SEED = 20261201
# How many warped copies a model reads unsure images in unless told (`load_model(tta=0)`: never). On the six
# real sites of docs/REAL_DATA.md, 8 raised the mean and the worst site's accuracy for every model measured,
# fine-tuned on 200 labels or `general` untrained (mean +0.2 to +0.8 points, worst site +0.8 to +2.8).
DEFAULT_COPIES = 8
# By default only the images read with a confidence under this are read in copies (`Recognizer(tta_below=)`).
# On captcha_images_v2 models fine-tuned on 200 labels that is 8% of the images, and reading only those in
# copies misreads about as few as reading every image in copies (benchmarks/reading_options.py).
UNSURE_BELOW = 0.9
# Half of `kcaptcha.data.augment.Augmenter`'s ranges at strength 1: larger warps helped no more.
ROTATION_DEGREES, SCALE, SHEAR, SHIFT = 4.0, 0.075, 0.15, (0.04, 0.03)


def warps(count: int, width: int, height: int) -> List[Tuple[float, ...]]:
    """`count` affine transforms (PIL's output -> input coefficients) about the image centre."""
    rng = np.random.default_rng(SEED)
    result = []
    for _ in range(count):
        rotation, scale, shear, dx, dy = rng.uniform(-1.0, 1.0, 5)
        angle = math.radians(ROTATION_DEGREES) * rotation
        zoom = 1.0 + SCALE * scale
        cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
        linear = np.array([[cos, -sin + SHEAR * shear], [sin, cos]])
        centre = np.array([width / 2.0, height / 2.0])
        offset = centre - np.array([SHIFT[0] * width * dx, SHIFT[1] * height * dy]) - linear @ centre
        result.append((linear[0, 0], linear[0, 1], offset[0], linear[1, 0], linear[1, 1], offset[1]))
    return result


def warp(batch: np.ndarray, coefficients: Sequence[float]) -> np.ndarray:
    """A float32 batch [n, height, width] in [0, 1] (white 1.0) warped by one transform, filled with white."""
    height, width = batch.shape[1:3]
    return np.stack([np.asarray(Image.fromarray(image, "F").transform(
        (width, height), Image.AFFINE, tuple(coefficients), Image.BILINEAR, fillcolor=1.0), np.float32)
        for image in np.asarray(batch, np.float32)])


def vote(readings: Sequence[Sequence[Prediction]]) -> List[Prediction]:
    """One reading per image from its readings in every copy ([copy][image], the unwarped first).

    The text whose confidences sum highest wins (a tie goes to the unwarped reading). Its confidence is that
    sum over the number of copies: the mean confidence in that text, counting 0 for copies that read another.
    Each character's confidence is its mean over the copies that read the winning text.
    """
    copies = len(readings)
    result = []
    for per_copy in zip(*readings):
        totals, characters = {}, {}
        for prediction in per_copy:
            totals[prediction.text] = totals.get(prediction.text, 0.0) + prediction.confidence
            characters.setdefault(prediction.text, []).append(prediction.char_confidences)
        text = max(totals, key=lambda t: totals[t])  # the first of equals: dicts keep insertion order
        char_confidences = tuple(float(c) for c in np.mean(characters[text], axis=0)) if text else ()
        result.append(Prediction(text, totals[text] / copies, char_confidences))
    return result
