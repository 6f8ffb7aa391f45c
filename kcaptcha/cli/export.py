"""bin/export [--model=digits] [--noquantize]

Writes model.onnx (float32) and model.int8.onnx (quantized, calibrated on captchas of the model's own
charset and size) into a saved model folder and records them, with their agreement with the Keras model,
in its metadata.json. Recognizers then run on onnxruntime (see kcaptcha.load_model's `backend`).
"""

import json

from absl import flags

from kcaptcha.cli import common

flags.DEFINE_string("model", "digits", "A model name (./saved_models/<name>, else a shipped one) or a model "
                    "folder.")
flags.DEFINE_bool("quantize", True, "Also write the int8 model.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from kcaptcha import saving
    from kcaptcha.export import export_onnx

    model_dir = saving.resolve_model_dir(FLAGS.model)
    saving.read_metadata(model_dir)
    print(json.dumps(export_onnx(model_dir, quantize=FLAGS.quantize), indent=2))


def run():
    common.run_main(main)


if __name__ == "__main__":
    run()
