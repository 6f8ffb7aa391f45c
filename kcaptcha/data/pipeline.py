"""The `tf.data` pipelines: labelled image files, and batches from the pool of synthetic captchas.

Images go through `kcaptcha.data.images.decode_image`, the same contract as reading and serving; labels come
from `kcaptcha.data.folder.LabelledFolder` and are encoded by `Vocab`.
"""

import dataclasses
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from kcaptcha.data import generate
from kcaptcha.data.augment import Augmenter
from kcaptcha.data.folder import LabelledFolder
from kcaptcha.data.images import Preprocessing, decode_image
from kcaptcha.reading.vocab import Vocab

AUTOTUNE = tf.data.AUTOTUNE
CACHE_LIMIT_BYTES = 2 * 1024**3  # decoded float images above this are not cached in memory


@dataclasses.dataclass
class LabelledImages:
    """Images to read (a float array [n, h, w, 1] or a batched dataset of them) and their true labels."""

    images: Union[np.ndarray, tf.data.Dataset]
    labels: List[str]


def labelled_files(folder: str, config) -> Tuple[List[str], List[str]]:
    """The labelled images under `folder` and their labels (`kcaptcha.data.folder.LabelledFolder`), checked
    against the config's vocab: a `ValueError` names the first image whose label the model cannot hold."""
    return LabelledFolder.open(folder, config.label_from).checked(Vocab.from_config(config))


def image_dataset(paths: Sequence[str], config, batch_size: int = 256, cache: bool = True) -> tf.data.Dataset:
    """Decoded images of `paths`, in order, batched (and cached): what validation reads."""
    dataset = tf.data.Dataset.from_tensor_slices(list(paths))
    preprocessing = Preprocessing.from_config(config)
    dataset = dataset.map(lambda path: decode_image(tf.io.read_file(path), config.height, config.width, preprocessing),
                          num_parallel_calls=AUTOTUNE).batch(batch_size)
    return (dataset.cache() if cache else dataset).prefetch(AUTOTUNE)


def file_batches(paths: Sequence[str], labels: Sequence[str], config, batch_size: int,
                 shard: Tuple[int, int] = (1, 0)) -> tf.data.Dataset:
    """Endless, shuffled (image, label ids) batches decoded in parallel from files, not yet augmented.

    `shard` (workers, this worker's index): each worker reads its own share of the files, taken by file
    before the shuffle, so no two workers read the same image and none decodes images it then drops.
    """
    count, index = shard
    if len(paths) < count:
        raise ValueError(f"{count} workers need at least {count} training images, one each. Received: "
                         f"{len(paths)} images")
    paths, labels = list(paths)[index::count], list(labels)[index::count]
    label_ids = Vocab.from_config(config).encode_many(labels)
    dataset = tf.data.Dataset.from_tensor_slices((paths, label_ids))
    dataset = dataset.shuffle(len(paths), seed=config.seed, reshuffle_each_iteration=True)

    preprocessing = Preprocessing.from_config(config)

    def load(path, ids):
        return decode_image(tf.io.read_file(path), config.height, config.width, preprocessing), ids

    dataset = dataset.map(load, num_parallel_calls=AUTOTUNE)
    if len(paths) * config.height * config.width * 4 <= CACHE_LIMIT_BYTES:
        # Shuffle again after the cache, so every epoch has a new order.
        dataset = dataset.cache().shuffle(min(len(paths), 10000), seed=config.seed)
    return dataset.repeat().batch(batch_size, drop_remainder=True)


def pool_batches(pool, config, batch_size: int, seed: Optional[int] = None) -> tf.data.Dataset:
    """Endless float (image, label ids) batches drawn from a `kcaptcha.data.pool.CaptchaPool`, not yet augmented."""
    dataset = pool.dataset(batch_size, seed=config.seed if seed is None else seed)
    return dataset.map(lambda pixels, ids: (tf.cast(pixels, tf.float32) * (1.0 / 255.0), ids),
                       num_parallel_calls=AUTOTUNE)


def training_batches(config, files=None, pool=None, synthetic_fraction: float = 0.0,
                     batch_size: Optional[int] = None, shard: Tuple[int, int] = (1, 0)) -> tf.data.Dataset:
    """Augmented training batches: from `files` ((paths, labels)), the captcha `pool`, or both mixed.

    Mixed, every batch holds round(batch_size * synthetic_fraction) synthetic captchas and the rest files.
    `batch_size` (default `config.batch_size`) is this replica's share of the global batch under a
    strategy, and `shard` this worker's share of the files (see `file_batches`); each worker's synthetic
    captchas are its own already (its `pool` draws from its own seed, `kcaptcha.training.distribute.data_seed`).
    """
    batch_size = batch_size or config.batch_size
    synthetic = batch_size if files is None else round(batch_size * synthetic_fraction)
    parts = []
    if synthetic < batch_size:
        parts.append(file_batches(*files, config, batch_size - synthetic, shard))
    if synthetic > 0:
        parts.append(pool_batches(pool, config, synthetic))
    dataset = parts[0] if len(parts) == 1 else tf.data.Dataset.zip(tuple(parts)).map(
        lambda *batches: tuple(tf.concat(part, axis=0) for part in zip(*batches)), num_parallel_calls=AUTOTUNE)
    augmenter = Augmenter(config.augment, config.seed)
    return dataset.map(lambda x, y: (augmenter(x), y), num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def synthetic_set(config, count: int, seed: int) -> LabelledImages:
    """A fixed set of `count` synthetic captchas as float images [count, h, w, 1] and labels."""
    renderer = generate.CaptchaRenderer.from_config(config, seed=seed)
    pixels, labels = generate.render_arrays(renderer, count, workers=config.data_workers)
    return LabelledImages(pixels[..., None].astype(np.float32) / 255.0, labels)


def validation_seed(config) -> int:
    """Synthetic validation images come from a seed training never draws from."""
    return config.seed + 1_000_003
