"""Recognizer.predict latency for single images and throughput for batches.

    python benchmarks/latency.py --model=digits
    python benchmarks/latency.py --model=alnum --backends=auto,int8 --tta=0,8

Single: one PIL image per call, as the parent's Recognizer was used (decode not included, resize not
needed). Batched: numpy batches of --batch_size through predict() (preprocessing included) and through
predict_batch() (already preprocessed).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string("model", "digits", "Model name or folder.")
flags.DEFINE_list("backends", ["keras", "auto", "auto/served"], "Recognizer backends to measure side by side; "
                  "/served: with the session bin/serve uses (threads sleep between calls instead of spinning).")
flags.DEFINE_list("tta", ["0"], "Warped copies per image (load_model's tta), each measured with every backend.")
flags.DEFINE_integer("single_calls", 500, "Single-image calls to time.")
flags.DEFINE_integer("batch_size", 512, "Images per batched call.")
flags.DEFINE_integer("batches", 10, "Batched calls to time.")
flags.DEFINE_integer("images", 256, "Distinct captchas cycled through (a model with a float32 fallback reads the "
                     "unsure share of them twice, so they should be many).")
FLAGS = flags.FLAGS


def measure(recognizer, label):
    import numpy as np

    from kcaptcha.data.generate import CaptchaRenderer

    renderer = CaptchaRenderer.from_metadata(recognizer.metadata, 4242)
    images = [renderer.render(i)[1] for i in range(FLAGS.images)]
    for image in images[:10]:
        recognizer.predict(image)
    timings = []
    for i in range(FLAGS.single_calls):
        started = time.perf_counter()
        recognizer.predict(images[i % len(images)])
        timings.append(time.perf_counter() - started)
    timings = np.array(timings) * 1000
    print(f"[{label}] single image: median {np.median(timings):.2f} ms, p90 {np.percentile(timings, 90):.2f} ms, "
          f"mean {timings.mean():.2f} ms over {FLAGS.single_calls} calls")

    arrays = np.stack([np.asarray(images[i % len(images)].convert("L")) for i in range(FLAGS.batch_size)])
    batch = arrays.astype(np.float32)[..., None] / 255.0
    recognizer.predict_batch(batch)
    started = time.perf_counter()
    for _ in range(FLAGS.batches):
        recognizer.predict_batch(batch)
    model_rate = FLAGS.batches * FLAGS.batch_size / (time.perf_counter() - started)
    pil_batch = [images[i % len(images)] for i in range(FLAGS.batch_size)]
    started = time.perf_counter()
    for _ in range(max(1, FLAGS.batches // 2)):
        recognizer.predict(pil_batch)
    full_rate = max(1, FLAGS.batches // 2) * FLAGS.batch_size / (time.perf_counter() - started)
    print(f"[{label}] batched ({FLAGS.batch_size}): {model_rate:.0f} images/s preprocessed arrays (predict_batch), "
          f"{full_rate:.0f} images/s from PIL images (predict)")


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import kcaptcha

    for tta in [int(count) for count in FLAGS.tta]:
        for entry in FLAGS.backends:
            backend, _, served = entry.partition("/")
            recognizer = kcaptcha.load_model(FLAGS.model, backend=backend, spin=not served, tta=tta)
            measure(recognizer, recognizer.backend + (", as served" if served else "") + (f", tta={tta}" if tta else ""))
    print(f"cpu cores: {os.cpu_count()}")


if __name__ == "__main__":
    app.run(main)
