"""Our default model against the parent's (`--architecture=legacy`), same data, same wall time, side by side.

    python benchmarks/accuracy.py --flagfile=experiments/digits.flags --minutes=10

Both train on the same on-the-fly synthetic stream (same seed) for the same wall-clock budget, one after
the other in this process, then read the same held-out captchas (a seed training never uses).
"""

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from kcaptcha.flags import config_from_flags, define_flags  # noqa: E402

define_flags()
flags.DEFINE_float("minutes", 10.0, "Training wall time per model.")
flags.DEFINE_integer("schedule_steps", 3000, "max_steps of the default model's learning-rate schedule (the "
                     "legacy model keeps the parent's constant rate); the wall-time budget still caps both.")
flags.DEFINE_integer("test_size", 2000, "Held-out images.")
flags.DEFINE_integer("test_seed", 777_777, "Seed of the held-out images.")
flags.DEFINE_string("output_json", None, "Write the results here too.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kcaptcha.data import pipeline as data
    from kcaptcha.reading import metrics
    from kcaptcha.reading.recognizer import load_model
    from kcaptcha.training.train import train

    base = config_from_flags(FLAGS)
    heldout = data.synthetic_set(base, FLAGS.test_size, FLAGS.test_seed)
    images, labels = heldout.images, heldout.labels
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("heads", "legacy"):
            max_steps = FLAGS.schedule_steps if kind == "heads" else 10**6
            config = base.replace(architecture=kind, max_train_seconds=int(FLAGS.minutes * 60), max_steps=max_steps,
                                  eval_every_steps=200, target_accuracy=1.0, patience=10**6)
            started = time.time()
            summary = train(config, os.path.join(tmp, kind), save_dir=os.path.join(tmp, kind + "_model"),
                            verbose=0)
            recognizer = load_model(os.path.join(tmp, kind + "_model"))
            predictions = recognizer.predict_batch(images)
            texts = [p.text for p in predictions]
            results[kind] = {
                "steps": summary["steps"],
                "images_seen": summary["images_seen"],
                "train_seconds": round(time.time() - started, 1),
                "parameters": recognizer.model.count_params(),
                **{f"heldout_{k}": v for k, v in metrics.scores(labels, texts).items()},
            }
            print(kind, json.dumps(results[kind]), flush=True)
    print(f"\n{'model':8} {'steps':>7} {'params':>10} {'image acc':>10} {'char acc':>9}")
    for kind, r in results.items():
        print(f"{kind:8} {r['steps']:>7} {r['parameters']:>10,} {r['heldout_image_accuracy']:>10.4f} "
              f"{r['heldout_character_accuracy']:>9.4f}")
    default, legacy = (results[k]["heldout_image_accuracy"] for k in ("heads", "legacy"))
    comparison = f"{default / legacy:.1f}x" if legacy else "legacy read no image right"
    print(f"after {FLAGS.minutes} min each: default {default:.4f} vs legacy {legacy:.4f} whole-image ({comparison})")
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump({"minutes": FLAGS.minutes, "config": base.subset(), "results": results}, f, indent=2)


if __name__ == "__main__":
    app.run(main)
