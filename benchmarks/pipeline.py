"""python benchmarks/pipeline.py [--input_dir=FOLDER] [--count=3000] [--batch_size=128]

Images per second of kcaptcha's `tf.data` file pipeline (`kcaptcha.data.pipeline.image_dataset`)
against the parent project's loader (one file at a time in Python: PIL open, np.array, grayscale,
flatten, /255 into a preallocated batch), on the same files in one run.

`image_dataset` caches decoded images in memory when they fit, so its first pass decodes and later passes
read the cache. Both are reported, each as the second of two passes over its own dataset (the first pays
for graph tracing and thread start-up): "uncached" with caching turned off, "cached" with it on. The
parent re-reads and re-decodes every file on every pass; training does many passes, so the cached rate is
what an epoch after the first costs, and the uncached rate is the honest per-decode comparison.
Without --input_dir, 3000 4-digit 100x60 captchas are generated into a temporary folder first.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parent_loader(paths, batch_size, height, width):
    """The parent's `get_batch` over every batch: one file at a time, in Python."""
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        batch_x = np.zeros([len(chunk), height * width])
        for i, path in enumerate(chunk):
            captcha_array = np.array(Image.open(path))
            if len(captcha_array.shape) > 2:
                r, g, b = captcha_array[:, :, 0], captcha_array[:, :, 1], captcha_array[:, :, 2]
                captcha_array = 0.2989 * r + 0.5870 * g + 0.1140 * b
            batch_x[i, :] = captcha_array.flatten() / 255
        yield batch_x


def rate(make_batches, count, passes=2):
    """Images/s of the last of `passes` full passes; also returns every pass's rate."""
    rates = []
    for _ in range(passes):
        start = time.perf_counter()
        seen = sum(len(batch[0]) if isinstance(batch, tuple) else len(batch) for batch in make_batches())
        rates.append(seen / (time.perf_counter() - start))
        if seen != count:
            raise RuntimeError(f"A pass yielded {seen} images, expected {count}")
    return rates[-1], rates


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input_dir", help="Folder of images (default: generate --count captchas).")
    parser.add_argument("--count", type=int, default=3000, help="Captchas to generate without --input_dir.")
    parser.add_argument("--batch_size", type=int, default=128)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from kcaptcha.data import generate
    from kcaptcha.config import Config

    config = Config(batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.input_dir
        if not folder:
            folder = scratch
            start = time.perf_counter()
            generate.write_images(generate.CaptchaRenderer.from_config(config), folder, args.count, progress=False)
            print(f"generated {args.count} captchas {config.width}x{config.height} in "
                  f"{time.perf_counter() - start:.1f} s")
        from kcaptcha.data import pipeline as data  # TensorFlow after the generator pool is gone
        import tensorflow as tf

        paths = data.list_images(folder)
        if not paths:
            raise SystemExit(f"No images in {folder}")
        with Image.open(paths[0]) as first:  # the parent does not resize: use the files' own size
            width, height = first.size
        config = config.replace(width=width, height=height)
        print(f"{len(paths)} files from {folder}, {width}x{height}, batch {args.batch_size}, "
              f"{os.cpu_count()} CPUs, TensorFlow {tf.__version__}")

        parent, parent_passes = rate(lambda: parent_loader(paths, args.batch_size, height, width), len(paths))
        uncached_dataset = data.image_dataset(paths, config, args.batch_size, cache=False)  # decodes every pass
        uncached, uncached_passes = rate(lambda: uncached_dataset, len(paths))
        cached_dataset = data.image_dataset(paths, config, args.batch_size)
        cached, cached_passes = rate(lambda: cached_dataset, len(paths))

    def passes(values):
        return ", ".join(f"{v:,.0f}" for v in values)

    print(f"parent loader (PIL, one at a time): {parent:10,.0f} images/s   (passes: {passes(parent_passes)})")
    print(f"kcaptcha image_dataset, uncached:    {uncached:10,.0f} images/s   (passes: {passes(uncached_passes)})"
          f"   {uncached / parent:5.1f}x")
    print(f"kcaptcha image_dataset, cached:      {cached:10,.0f} images/s   (passes: {passes(cached_passes)}; "
          f"the first decodes and fills the cache)   {cached / parent:5.1f}x")
    print("(each rate is the second pass; the cached rate is every epoch after the first in training)")


if __name__ == "__main__":
    main()
