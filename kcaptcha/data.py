"""The `tf.data` pipelines: labelled image files, and batches from the pool of synthetic captchas.

Images go through `kcaptcha.images.decode_image`, the same contract as reading and serving; labels come
from file names by the configured `LabelRule` and are encoded by `Vocab`.
"""

import dataclasses
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from kcaptcha import generate, inventory
from kcaptcha.augment import Augmenter
from kcaptcha.files import IMAGE_EXTENSIONS, list_images
from kcaptcha.images import decode_image
from kcaptcha.vocab import Vocab

AUTOTUNE = tf.data.AUTOTUNE
CACHE_LIMIT_BYTES = 2 * 1024**3  # decoded float images above this are not cached in memory


@dataclasses.dataclass
class LabelledImages:
    """Images to read (a float array [n, h, w, 1] or a batched dataset of them) and their true labels."""

    images: Union[np.ndarray, tf.data.Dataset]
    labels: List[str]


def labelled_files(folder: str, config) -> Tuple[List[str], List[str]]:
    """All images under `folder` with the labels their names carry, checked against the config's vocab."""
    paths = list_images(folder)
    if not paths:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in {folder!r}")
    vocab, rule = Vocab.from_config(config), inventory.label_rule_for(folder, config.label_from)
    labels = []
    for path in paths:
        label = rule.label(path)
        problem = "its name carries no label" if label is None else vocab.check(label)
        if problem:
            raise ValueError(f"Bad training label {label!r} in {path}: {problem} (labels from file names by "
                             f"label_from={rule!r}). Run bin/prepare to validate and split the "
                             "folder first.")
        labels.append(label)
    return paths, labels


def image_dataset(paths: Sequence[str], config, batch_size: int = 256, cache: bool = True) -> tf.data.Dataset:
    """Decoded images of `paths`, in order, batched (and cached): what validation reads."""
    dataset = tf.data.Dataset.from_tensor_slices(list(paths))
    dataset = dataset.map(lambda path: decode_image(tf.io.read_file(path), config.height, config.width),
                          num_parallel_calls=AUTOTUNE).batch(batch_size)
    return (dataset.cache() if cache else dataset).prefetch(AUTOTUNE)


def file_dataset(paths: Sequence[str], labels: Sequence[str], config) -> tf.data.Dataset:
    """Endless, shuffled, augmented (image, label ids) training batches decoded in parallel from files."""
    label_ids = Vocab.from_config(config).encode_many(labels)
    dataset = tf.data.Dataset.from_tensor_slices((list(paths), label_ids))
    dataset = dataset.shuffle(len(paths), seed=config.seed, reshuffle_each_iteration=True)

    def load(path, ids):
        return decode_image(tf.io.read_file(path), config.height, config.width), ids

    dataset = dataset.map(load, num_parallel_calls=AUTOTUNE)
    if len(paths) * config.height * config.width * 4 <= CACHE_LIMIT_BYTES:
        # Shuffle again after the cache, so every epoch has a new order.
        dataset = dataset.cache().shuffle(min(len(paths), 10000), seed=config.seed)
    augmenter = Augmenter(config.augment, config.seed)
    dataset = dataset.repeat().batch(config.batch_size, drop_remainder=False)
    return dataset.map(lambda x, y: (augmenter(x), y), num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def pool_dataset(pool, config, seed: Optional[int] = None) -> tf.data.Dataset:
    """Endless augmented (image, label ids) training batches drawn from a `kcaptcha.pool.CaptchaPool`."""
    dataset = pool.dataset(config.batch_size, seed=config.seed if seed is None else seed)
    augmenter = Augmenter(config.augment, config.seed)

    def to_float(pixels, ids):
        return augmenter(tf.cast(pixels, tf.float32) * (1.0 / 255.0)), ids

    return dataset.map(to_float, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def synthetic_set(config, count: int, seed: int) -> LabelledImages:
    """A fixed set of `count` synthetic captchas as float images [count, h, w, 1] and labels."""
    renderer = generate.CaptchaRenderer.from_config(config, seed=seed)
    pixels, labels = generate.render_arrays(renderer, count, workers=config.data_workers)
    return LabelledImages(pixels[..., None].astype(np.float32) / 255.0, labels)


def validation_seed(config) -> int:
    """Synthetic validation images come from a seed training never draws from."""
    return config.seed + 1_000_003
