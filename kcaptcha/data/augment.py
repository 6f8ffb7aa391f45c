"""Per-image augmentation of training batches: what real captchas vary in, drawn anew for every image.

`Augmenter(strength)` maps a float batch [n, h, w, 1] in [0, 1] (white background) to another:
- geometry: a small rotation, scale, shear and shift, composed into one affine warp per image (one
  warp instead of Keras' four RandomRotation/RandomZoom/RandomShear/RandomTranslation passes, which
  matters on a 2-core CPU), filling with white;
- thin dark lines across the text, as many captchas draw;
- blur, contrast and brightness: Keras' RandomGaussianBlur, RandomContrast and RandomBrightness;
- pixel noise.
`strength` in [0, 1] scales every range; 0 turns augmentation off.
"""

import math

import keras
import tensorflow as tf

MAX_LINES = 2


class Augmenter:
    """Augments float image batches; build once, call inside a `tf.data` map."""

    def __init__(self, strength: float, seed: int = 0):
        self.strength = float(strength)
        s = self.strength
        self.rotation = math.radians(8.0) * s
        self.scale = 0.15 * s
        self.shear = 0.3 * s
        self.shift = (0.08 * s, 0.06 * s)  # fractions of the width and height
        self.line_probability = 0.5 * s
        self.noise = 0.06 * s
        self.layers = [
            keras.layers.RandomGaussianBlur(factor=0.5 * s, kernel_size=3, sigma=(0.1, 1.0) if s else 0.1,
                                            value_range=(0.0, 1.0), seed=seed),
            keras.layers.RandomContrast(0.4 * s, value_range=(0.0, 1.0), seed=seed + 1),
            keras.layers.RandomBrightness(0.15 * s, value_range=(0.0, 1.0), seed=seed + 2),
        ] if s > 0 else []

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        if self.strength <= 0:
            return images
        images = self.warp(images)
        images = self.lines(images)
        for layer in self.layers:
            images = layer(images, training=True)
        images += tf.random.normal(tf.shape(images)) * tf.random.uniform([tf.shape(images)[0], 1, 1, 1], 0.0,
                                                                          self.noise)
        return tf.clip_by_value(images, 0.0, 1.0)

    def warp(self, images: tf.Tensor) -> tf.Tensor:
        """One random affine transform per image about its centre; uncovered pixels are white."""
        shape = tf.shape(images)
        n, height, width = shape[0], tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)

        def uniform(limit):
            return tf.random.uniform([n], -limit, limit)

        angle, shear = uniform(self.rotation), uniform(self.shear)
        zoom = 1.0 + uniform(self.scale)
        shift_x, shift_y = uniform(self.shift[0]) * width, uniform(self.shift[1]) * height
        cos, sin = tf.cos(angle), tf.sin(angle)
        # Forward map A = rotation . shear . zoom; the op wants the inverse (output -> input pixel).
        a, b = zoom * cos, zoom * (cos * shear - sin)
        c, d = zoom * sin, zoom * (sin * shear + cos)
        det = a * d - b * c
        ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
        cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
        tx, ty = cx + shift_x, cy + shift_y
        transforms = tf.stack([ia, ib, cx - ia * tx - ib * ty, ic, id_, cy - ic * tx - id_ * ty,
                               tf.zeros([n]), tf.zeros([n])], axis=1)
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=shape[1:3], fill_value=1.0,
            interpolation="BILINEAR", fill_mode="CONSTANT")

    def lines(self, images: tf.Tensor) -> tf.Tensor:
        """Up to `MAX_LINES` thin, antialiased dark lines across each image, each with its probability."""
        shape = tf.shape(images)
        n, height, width = shape[0], tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        ys = tf.range(height)[None, :, None]
        xs = tf.range(width)[None, None, :]
        for _ in range(MAX_LINES):
            x0 = tf.random.uniform([n, 1, 1], -0.1, 0.3) * width
            x1 = tf.random.uniform([n, 1, 1], 0.7, 1.1) * width
            y0, y1 = (tf.random.uniform([n, 1, 1], 0.1, 0.9) * height for _ in range(2))
            dx, dy = x1 - x0, y1 - y0
            along = tf.clip_by_value(((xs - x0) * dx + (ys - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
            distance = tf.sqrt((xs - x0 - along * dx) ** 2 + (ys - y0 - along * dy) ** 2)
            half_width = tf.random.uniform([n, 1, 1], 0.3, 1.2)
            coverage = tf.clip_by_value(half_width + 0.5 - distance, 0.0, 1.0)
            darkness = tf.random.uniform([n, 1, 1], 0.4, 1.0)
            darkness *= tf.cast(tf.random.uniform([n, 1, 1]) < self.line_probability, tf.float32)
            images *= (1.0 - darkness * coverage)[..., None]
        return images
