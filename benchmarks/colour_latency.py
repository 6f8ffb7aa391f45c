"""What a learned colour gray in front of a model costs in time, as ONNX float and int8, side by side.

    python benchmarks/colour_latency.py --model=runs/exp/saved_s5 --colour_model=runs/exp/colour_k3/colour.keras

`--colour_model` is a model that `benchmarks/colour_probe.py --save_dir` saved (RGB in). Both are exported
to float ONNX and to int8 (kcaptcha.export.onnx's quantization, calibrated on 256 captchas of the model's task),
then timed in `--rounds` interleaved rounds: the median of `--single_calls` one-image calls, and three
batches of 512 after one untimed. The network alone: no decoding or preprocessing, unlike benchmarks/latency.py.
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import colour_probe  # noqa: E402  (its --model is the luma model; its render and to_input feed both)

flags.DEFINE_string("colour_model", None, "A colour_probe model (.keras, RGB in).", required=True)
flags.DEFINE_integer("single_calls", 400, "One-image calls per timing.")
flags.DEFINE_integer("rounds", 2, "Interleaved rounds.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    from kcaptcha.export import onnx as export

    from kcaptcha.export import saving
    from kcaptcha.config import Config

    model_dir = saving.resolve_model_dir(FLAGS.model)
    config = Config.from_dict(saving.read_metadata(model_dir)["config"])
    _, pictures, _ = colour_probe.render(config, 555, 600)
    inputs = {channels: colour_probe.to_input(pictures, arm) for channels, arm in ((1, "luma"), (3, "colour"))}
    models = {"luma": (export.load_keras_model(model_dir), 1),
              "colour": (keras.saving.load_model(FLAGS.colour_model, compile=False), 3)}
    sessions = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, (model, channels) in models.items():
            path = os.path.join(folder, f"{name}.onnx")
            export.to_onnx(model, path)
            export.to_int8(path, path + ".int8", inputs[channels][:256])
            for kind, onnx_path in (("float", path), ("int8", path + ".int8")):
                sessions[(name, kind)] = (export.onnx_session(onnx_path), inputs[channels])
        print("| round | model | ONNX | one image, median | batch of 512 |\n|---|---|---|---|---|")
        for round_ in range(FLAGS.rounds):
            for (name, kind), (session, images) in sessions.items():
                feed = session.get_inputs()[0].name
                times = []
                for index in range(FLAGS.single_calls):
                    one = images[index % len(images)][None]
                    started = time.perf_counter()
                    session.run(None, {feed: one})
                    times.append(time.perf_counter() - started)
                session.run(None, {feed: images[:512]})  # a new batch shape: onnxruntime allocates once
                started = time.perf_counter()
                for _ in range(3):
                    session.run(None, {feed: images[:512]})
                batched = 3 * 512 / (time.perf_counter() - started)
                print(f"| {round_ + 1} | {name} | {kind} | {np.median(times) * 1e3:.3f} ms | {batched:,.0f} images/s |",
                      flush=True)


if __name__ == "__main__":
    app.run(main)
