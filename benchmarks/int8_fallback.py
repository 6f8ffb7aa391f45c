"""The int8 export read alone, and with its unsure readings read again in float32, against the float32 export.

    python benchmarks/int8_fallback.py --model=alnum --test_dir=/tmp/heldout_alnum

For each threshold of --below: the share of images the int8 model reads with a confidence under it (those
read again in float32), the agreement of the pair's readings with Keras on the export's own check images
(what `bin/export` records as `int8_fallback_agreement` for the lowest of `export.FALLBACK_CHOICES` that
agrees), and with the float32 export and the labels on --test_dir.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string("model", "alnum", "Model name or folder (with both ONNX exports).")
flags.DEFINE_string("test_dir", None, "Labelled images to read too (file names carry the labels).")
flags.DEFINE_string("label_from", "prefix", "Where --test_dir's file names carry their labels.")
flags.DEFINE_list("below", ["0", "0.5", "0.6", "0.7", "0.8", "0.9"], "Thresholds (0: int8 alone).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np

    import kcaptcha
    from kcaptcha.export import onnx as export
    from kcaptcha.files import LabelRule, list_images

    int8, float32 = (kcaptcha.load_model(FLAGS.model, backend=b) for b in ("int8", "float"))
    metadata = int8.metadata
    entry = metadata["export"]  # the images export_onnx (seed 31337) checked on
    _, check, _, where = export._own_images(metadata, entry["calibration_images"], entry["check_images"], 31337)
    keras = kcaptcha.load_model(FLAGS.model, backend="keras")
    sets = [("check images", check, None)]  # against Keras, as bin/export checks
    if FLAGS.test_dir:
        paths = list_images(FLAGS.test_dir)
        rule = LabelRule.parse(FLAGS.label_from)
        sets.append((FLAGS.test_dir, np.stack([int8.preprocess(p) for p in paths]), [rule.label(p) for p in paths]))
    print(f"{FLAGS.model}: check images are {where}")
    for name, batch, labels in sets:
        quantized, exact = int8.read(batch), float32.read(batch)
        reference, against = (keras.read(batch), "Keras") if labels is None else (exact, "float32")

        def accuracy(readings):
            return np.mean([r.text == t for r, t in zip(readings, labels)])

        print(f"{name} ({len(batch)})" + (f": float32 accuracy {accuracy(exact):.4f}" if labels else ""))
        for below in (float(b) for b in FLAGS.below):
            check = export.fallback_check(reference, quantized, exact, below)
            line = (f"  float32 again under {below:g}: {check['int8_fallback_share']:.3f} read twice, agreement "
                    f"with {against} {check['int8_fallback_agreement']:.4f}")
            if labels:
                line += f", accuracy {accuracy(export.with_fallback(quantized, exact, below)):.4f}"
            print(line)


if __name__ == "__main__":
    app.run(main)
