"""Does a model trained on synthetic captchas read the ones it trained on better than fresh ones?

    python benchmarks/fit_gap.py --model=runs/exp/saved_s5

A model that reads its own training captchas far better than fresh ones of the same generator has learnt
them by heart: more (or more varied) data is the lever. One that reads both alike underfits: the lever is
the network (capacity) or the optimisation, not the data. It reads, as `load_model(backend="float")` does:
- the oldest captchas in the pool when the kept model was saved: `--count` captchas of the training seed
  from `pool_size` before the number drawn by then (`captchas_drawn` at `best_step` in the run's
  history.csv). Each had spent a whole pool lifetime being sampled, several times, just before;
- the same count from far beyond anything the run drew (same seed and generator, never trained on);
- the held-out set of the shipped-model tables (`--heldout_seed`).
"""

import csv
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string("model", "alnum", "Model name or folder, trained on synthetic captchas.")
flags.DEFINE_integer("count", 2000, "Captchas in each set.")
flags.DEFINE_integer("trained_last", None, "Captchas the run had drawn when the model was kept (default: "
                     "captchas_drawn at best_step in the run's history.csv).")
flags.DEFINE_integer("fresh_first", 10_000_000, "First index of the never-trained-on captchas of the same seed.")
flags.DEFINE_integer("heldout_seed", 20_261_129, "Seed of the held-out set.")
FLAGS = flags.FLAGS


def captchas_drawn_at(run_dir: str, step: int) -> int:
    path = os.path.join(run_dir, "history.csv")
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found (the run folder is not kept with the model): give --trained_last")
    with open(path, newline="") as f:
        rows = [row for row in csv.DictReader(f) if int(row["step"]) <= step]
    if not rows or "captchas_drawn" not in rows[-1]:
        raise SystemExit(f"{path} has no captchas_drawn up to step {step}: give --trained_last")
    return int(rows[-1]["captchas_drawn"])


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import kcaptcha
    from kcaptcha.reading import metrics
    from kcaptcha.export import saving
    from kcaptcha.config import Config
    from kcaptcha.data.generate import CaptchaRenderer, render_arrays

    metadata = saving.read_metadata(saving.resolve_model_dir(FLAGS.model))
    config = Config.from_dict(metadata["config"])
    training = metadata.get("training", {})
    last = FLAGS.trained_last
    if last is None:
        last = captchas_drawn_at(training.get("run_dir", ""), training.get("best_step", 0))
    reader = kcaptcha.load_model(FLAGS.model, backend="float")
    first = max(0, last - config.pool_size)
    sets = [(f"trained on (seed {config.seed}, captchas {first}..{first + FLAGS.count - 1})", config.seed, first),
            (f"never trained on (seed {config.seed}, from {FLAGS.fresh_first})", config.seed, FLAGS.fresh_first),
            (f"held-out (seed {FLAGS.heldout_seed})", FLAGS.heldout_seed, 0)]
    print(f"{FLAGS.model}: trained on seed {config.seed}, {training.get('images_seen', '?')} images seen")
    print("| captchas | whole-image | character (1 - error rate) |\n|---|---|---|")
    for name, seed, first in sets:
        images, labels = render_arrays(CaptchaRenderer.from_config(config, seed=seed), FLAGS.count, first=first)
        texts = [p.text for p in reader.predict(images[..., None])]  # [n, h, w] -> [n, h, w, 1]
        print(f"| {name} | {metrics.image_accuracy(labels, texts):.4f} | "
              f"{metrics.character_accuracy(labels, texts):.4f} |", flush=True)


if __name__ == "__main__":
    app.run(main)
