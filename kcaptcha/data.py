"""The `tf.data` pipelines: labelled image files, and endless on-the-fly synthetic captchas.

Every image becomes the same model input, whatever its format, mode or size: decode (PNG, JPEG, GIF's
first frame, BMP), composite any alpha channel on white, convert to ITU-R 601 grayscale, resize to
(height, width) and scale to [0, 1]. `kcaptcha.recognizer` does the same with PIL for single images.
"""

from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from kcaptcha import generate
from kcaptcha.files import IMAGE_EXTENSIONS, label_from_filename, list_images
from kcaptcha.vocab import Vocab

AUTOTUNE = tf.data.AUTOTUNE
CACHE_LIMIT_BYTES = 2 * 1024**3  # decoded float images above this are not cached in memory


def labelled_files(folder: str, vocab: Vocab) -> Tuple[List[str], np.ndarray]:
    """All images under `folder` with labels from their names, checked against `vocab`."""
    paths = list_images(folder)
    if not paths:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in {folder!r}")
    labels = []
    for path in paths:
        label = label_from_filename(path)
        problem = vocab.check(label)
        if problem:
            raise ValueError(f"Bad training label {label!r} in {path}: {problem}. "
                             "Run bin/prepare to validate and split the folder first.")
        labels.append(label)
    return paths, vocab.encode_many(labels)


def decode_image(data: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Encoded image bytes -> float32 [height, width, 1] in [0, 1], white background."""
    image = tf.io.decode_image(data, channels=0, expand_animations=False, dtype=tf.uint8)
    image = tf.cast(tf.ensure_shape(image, [None, None, None]), tf.float32) * (1.0 / 255.0)

    def composite(color, alpha):
        return color * alpha + (1.0 - alpha)

    image = tf.switch_case(tf.shape(image)[-1] - 1, [  # by channel count: L, LA, RGB, RGBA
        lambda: image[..., :1],
        lambda: composite(image[..., :1], image[..., 1:2]),
        lambda: tf.image.rgb_to_grayscale(image[..., :3]),
        lambda: tf.image.rgb_to_grayscale(composite(image[..., :3], image[..., 3:4])),
    ])
    image = tf.ensure_shape(image, [None, None, 1])
    same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], [height, width]))
    return tf.cond(  # resizing costs as much as decoding: skip it when the size already fits
        same_size,
        lambda: tf.reshape(image, (height, width, 1)),
        lambda: tf.clip_by_value(tf.image.resize(image, (height, width), antialias=True), 0.0, 1.0))


def augment_images(images: tf.Tensor, strength: float) -> tf.Tensor:
    """Light, label-preserving augmentation of a float batch: shifts, contrast, brightness, noise."""
    if strength <= 0:
        return images
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    pad = max(1, int(round(3 * strength)))
    # Shift by up to `pad` pixels, filling with white (the usual captcha background).
    padded = tf.pad(images - 1.0, [[0, 0], [pad, pad], [pad, pad], [0, 0]]) + 1.0
    images = tf.image.random_crop(padded, tf.stack([shape[0], height, width, 1]))
    batch = shape[0]
    contrast = tf.random.uniform([batch, 1, 1, 1], 1.0 - 0.3 * strength, 1.0 + 0.3 * strength)
    brightness = tf.random.uniform([batch, 1, 1, 1], -0.1 * strength, 0.1 * strength)
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    images = (images - mean) * contrast + mean + brightness
    images += tf.random.normal(tf.shape(images), stddev=0.03 * strength)
    return tf.clip_by_value(images, 0.0, 1.0)


def file_dataset(paths: Sequence[str], label_ids: np.ndarray, config, training: bool,
                 batch_size: Optional[int] = None) -> tf.data.Dataset:
    """(image, label ids) batches from files, decoded in parallel; shuffled and repeated for training."""
    batch_size = batch_size or config.batch_size
    dataset = tf.data.Dataset.from_tensor_slices((list(paths), label_ids))
    if training:
        dataset = dataset.shuffle(len(paths), seed=config.seed, reshuffle_each_iteration=True)

    def load(path, ids):
        return decode_image(tf.io.read_file(path), config.height, config.width), ids

    dataset = dataset.map(load, num_parallel_calls=AUTOTUNE)
    if len(paths) * config.height * config.width * 4 <= CACHE_LIMIT_BYTES:
        dataset = dataset.cache()
        if training:  # shuffle again after the cache, so every epoch has a new order
            dataset = dataset.shuffle(min(len(paths), 10000), seed=config.seed)
    if training:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=False)
    if training and config.augment > 0:
        dataset = dataset.map(lambda x, y: (augment_images(x, config.augment), y), num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)


def folder_dataset(folder: str, config, training: bool, batch_size: Optional[int] = None) -> tf.data.Dataset:
    """`file_dataset` over every labelled image under `folder`."""
    paths, label_ids = labelled_files(folder, Vocab.from_config(config))
    return file_dataset(paths, label_ids, config, training, batch_size)


def synthetic_dataset(config, seed: Optional[int] = None, start_batch: int = 0,
                      training: bool = True) -> tf.data.Dataset:
    """Endless batches of fresh captchas drawn by worker processes: the embedded default data set.

    Batch `k` of a seed is always the same images, so a resumed run can continue at `start_batch`.
    """
    vocab = Vocab.from_config(config)
    renderer = generate.CaptchaRenderer.from_config(config, seed=seed)

    def batches():
        for pixels, labels in generate.stream_batches(renderer, config.batch_size, start_batch, config.workers):
            yield pixels[..., None], vocab.encode_many(labels)

    signature = (
        tf.TensorSpec([config.batch_size, config.height, config.width, 1], tf.uint8),
        tf.TensorSpec([config.batch_size, config.max_length], tf.int32),
    )
    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    strength = config.augment if training else 0.0

    def to_float(pixels, ids):
        return augment_images(tf.cast(pixels, tf.float32) / 255.0, strength), ids

    return dataset.map(to_float, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def synthetic_arrays(config, count: int, seed: int) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """A fixed synthetic set as arrays: float images [count, h, w, 1], label ids and label strings."""
    renderer = generate.CaptchaRenderer.from_config(config, seed=seed)
    pixels, labels = generate.render_arrays(renderer, count, workers=config.workers)
    images = pixels[..., None].astype(np.float32) / 255.0
    return images, Vocab.from_config(config).encode_many(labels), labels


def validation_seed(config) -> int:
    """Synthetic validation images come from a seed training never draws from."""
    return config.seed + 1_000_003
