"""Int8 ONNX latency of candidate `ctc` shapes before training any: speed does not depend on the weights.

    python benchmarks/architecture_latency.py --flagfile=experiments/alnum.flags \
        --candidates=16,32,64,96@160x60 --candidates=16,32,48,64@160x60 --candidates=16,32,64,96@128x48

Each candidate (conv filters, `+N` for N extra blocks after the last stage, @ width x height; the first
is the reference) is built with fresh weights, exported and quantized as `bin/export` does (calibrated on
256 captchas of the task at its size), and timed in rounds, side by side in one process: single images
(median of --single_calls per round) and batches of 256 random arrays. Ratios to the first candidate are
what to compare on a shared machine.
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from kcaptcha.flags import config_from_flags, define_flags  # noqa: E402

define_flags()
flags.DEFINE_multi_string("candidates", ["16,32,64,96@160x60", "16,32,48,64@160x60", "16,32,64,96@128x48",
                                         "16,32,48,64@128x48"], "FILTERS@WIDTHxHEIGHT; the first is the reference.")
flags.DEFINE_integer("rounds", 4, "Timing rounds (candidates interleaved).")
flags.DEFINE_integer("single_calls", 150, "Single-image calls per candidate and round.")
FLAGS = flags.FLAGS


def parse(candidate: str):
    """`16,32,64,96+1@160x60`: filters, extra blocks (optional `+N`), width, height."""
    filters, size = candidate.split("@")
    filters, _, extra = filters.partition("+")
    width, height = size.lower().split("x")
    return tuple(int(f) for f in filters.split(",")), int(extra or 0), int(width), int(height)


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    from kcaptcha import models

    from kcaptcha.export import onnx as export
    from kcaptcha.data.generate import CaptchaRenderer

    base = config_from_flags(FLAGS)
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for index, candidate in enumerate(FLAGS.candidates):
            filters, extra_blocks, width, height = parse(candidate)
            config = base.replace(conv_filters=filters, extra_blocks=extra_blocks, width=width, height=height)
            model = models.new_model(config)
            path = os.path.join(tmp, f"{index}.onnx")
            export.to_onnx(model, path)
            export.to_int8(path, path + ".int8", export.model_inputs(CaptchaRenderer.from_config(config, seed=1), 256))
            sessions[candidate] = (export.onnx_session(path + ".int8", spin=True), config, model.count_params())
        single = {c: [] for c in sessions}
        batched = {c: [] for c in sessions}
        for _ in range(FLAGS.rounds):
            for candidate, (session, config, _) in sessions.items():
                one = np.random.rand(1, config.height, config.width, 1).astype(np.float32)
                batch = np.random.rand(256, config.height, config.width, 1).astype(np.float32)
                for _ in range(20):
                    session.run(None, {export.INPUT_NAME: one})
                for _ in range(FLAGS.single_calls):
                    started = time.perf_counter()
                    session.run(None, {export.INPUT_NAME: one})
                    single[candidate].append(time.perf_counter() - started)
                started = time.perf_counter()
                session.run(None, {export.INPUT_NAME: batch})
                batched[candidate].append(256 / (time.perf_counter() - started))
    reference = np.median(single[FLAGS.candidates[0]])
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("| candidate | parameters | int8 single (median) | vs the first | int8 batched |")
    print("|---|---|---|---|---|")
    for candidate, (_, _, parameters) in sessions.items():
        median = np.median(single[candidate])
        print(f"| {candidate} | {parameters:,} | {1000 * median:.3f} ms | {median / reference:.2f}x | "
              f"{np.median(batched[candidate]):,.0f} images/s |")


if __name__ == "__main__":
    app.run(main)
