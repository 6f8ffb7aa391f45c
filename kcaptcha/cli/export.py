"""bin/export [--model=digits] [--format=onnx|savedmodel|tflite] [--output=PATH] [--noquantize]

--format=onnx (the default) writes model.onnx (float32) and model.int8.onnx (quantized, calibrated on
captchas of the model's own charset and size) into the saved model folder and records them, with their
agreement with the Keras model, in its metadata.json. Recognizers then run on onnxruntime (see
kcaptcha.load_model's `backend`).

--format=savedmodel writes a TensorFlow SavedModel for TensorFlow Serving (default: <model>/savedmodel/1):
its `serving_default` signature takes `image_bytes` (encoded PNG, JPEG or GIF files) and returns `text`
and `confidence`. --format=tflite writes a TFLite model of builtin ops (default: <model>/model.tflite)
taking float32 pixels and returning charset `ids` and `confidence`, with the charset in <output>.json.
Both are checked against the Keras model on the model's own images (a model trained on a folder: its
validation and training images, topped up with warped copies) or fresh captchas of its task; an agreement
under 99.8% fails the command.
See docs/DEPLOY.md.
"""

import json
import os

from absl import flags

from kcaptcha.cli import common

common.define_model_flag()
flags.DEFINE_enum("format", "onnx", ["onnx", "savedmodel", "tflite"], "What to export.")
flags.DEFINE_string("output", None, "Where --format=savedmodel|tflite writes (default: in the model folder).")
flags.DEFINE_integer("check_size", 500, "Images a SavedModel or TFLite export is checked on.",
                     lower_bound=1)
flags.DEFINE_bool("quantize", True, "Also write the int8 ONNX model.")
FLAGS = flags.FLAGS
_DEFAULT_OUTPUTS = {"savedmodel": os.path.join("savedmodel", "1"), "tflite": "model.tflite"}


def main(argv):
    common.no_arguments(argv, "give the model with --model=NAME_OR_PATH")
    from kcaptcha.export import saving

    model_dir = saving.resolve_model_dir(FLAGS.model)
    saving.read_metadata(model_dir)
    if FLAGS.format == "onnx":
        if FLAGS.output:
            raise common.UsageError("--output is for --format=savedmodel|tflite; ONNX files go into the model "
                                    "folder")
        from kcaptcha.export.onnx import export_onnx

        print(json.dumps(export_onnx(model_dir, quantize=FLAGS.quantize), indent=2))
        return
    from kcaptcha.export import serving as serving_export
    from kcaptcha.export.onnx import MIN_AGREEMENT

    output = FLAGS.output or os.path.join(model_dir, _DEFAULT_OUTPUTS[FLAGS.format])
    write = serving_export.export_savedmodel if FLAGS.format == "savedmodel" else serving_export.export_tflite
    result = write(model_dir, output, check_size=FLAGS.check_size)
    print(json.dumps(result, indent=2))
    if result["agreement"] < MIN_AGREEMENT:
        raise RuntimeError(f"the {FLAGS.format} export at {output} agrees with the Keras model on "
                           f"{result['agreement']:.1%} of {result['check_images']} captchas (at least "
                           f"{MIN_AGREEMENT:.1%} needed)")


def run():
    common.run_main(main)


if __name__ == "__main__":
    run()
