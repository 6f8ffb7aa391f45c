"""How much of each character do its neighbours cover, and how do misreads follow it?

    python benchmarks/occlusion.py --models=alnum,runs/capacity/saved_32_64_128_192

The `captcha` library pastes each character over the one before it (its offset steps back by up to a
quarter of a character's width), in one colour, so neighbours can merge into one shape. This draws the
held-out captchas of the first model's task (`--seed`, as `bin/generate` draws them) and records, for
every character of the library's look, the share of its ink that another character's ink lies on. A
captcha's occlusion is the largest share among its characters. kcaptcha's own look is counted apart (its
characters are placed apart). Each model reads the captchas in float32 (Keras where a folder has no ONNX
export); the table gives, by occlusion, how often each model misreads and how often every model does.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from library_look import drawing  # noqa: E402
from readers import float32_reader  # noqa: E402

flags.DEFINE_list("models", ["alnum"], "Model names or folders; the first decides the task.")
flags.DEFINE_integer("count", 2000, "Held-out captchas.")
flags.DEFINE_integer("seed", 20_261_129, "Their seed (one training never uses).")
flags.DEFINE_list("bins", ["0", "0.1", "0.2", "0.3", "0.5"], "Lower edges of the occlusion bins.")
FLAGS = flags.FLAGS

PAD = 100  # canvas margin: a rotated character can be taller than the image


def occlusion(width: int, height: int, inks) -> float:
    """The largest share of a character's ink that other characters' ink covers."""
    import numpy as np

    count = np.zeros((height + 2 * PAD, width + 2 * PAD), np.int32)
    for x, y, ink in inks:
        count[PAD + y:PAD + y + ink.shape[0], PAD + x:PAD + x + ink.shape[1]] += ink
    worst = 0.0
    for x, y, ink in inks:
        others = count[PAD + y:PAD + y + ink.shape[0], PAD + x:PAD + x + ink.shape[1]] - ink
        if ink.sum():
            worst = max(worst, float((ink & (others > 0)).sum() / ink.sum()))
    return worst


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    from kcaptcha.export import saving
    from kcaptcha.config import Config
    from kcaptcha.data.generate import LOOK_KCAPTCHA, CaptchaRenderer

    config = Config.from_dict(saving.read_metadata(saving.resolve_model_dir(FLAGS.models[0]))["config"])
    renderer = CaptchaRenderer.from_config(config, seed=FLAGS.seed)
    labels, pictures, scores, records = [], [], [], []
    with drawing(records):
        for index in range(FLAGS.count):
            label, picture = renderer.render(index)
            labels.append(label)
            pictures.append(np.asarray(picture))
            if renderer.look(index) == LOOK_KCAPTCHA:
                scores.append(None)
            else:
                scores.append(occlusion(*records.pop()))
            records.clear()
    images = np.stack(pictures)  # RGB: each model makes its gray as load_model does
    wrong = []
    for model in FLAGS.models:
        texts = [p.text for p in float32_reader(model).predict(images)]
        wrong.append(np.array([t != label for t, label in zip(texts, labels)]))
    every = np.logical_and.reduce(wrong)

    edges = [float(b) for b in FLAGS.bins] + [1.01]
    groups = [("kcaptcha's own look", np.array([s is None for s in scores]))]
    library = np.array([-1.0 if s is None else s for s in scores])
    for low, high in zip(edges, edges[1:]):
        groups.append((f"library look, occlusion {low:.2f}-{min(high, 1.0):.2f}", (library >= low) & (library < high)))
    print(f"{FLAGS.count} held-out captchas, seed {FLAGS.seed}\n")
    print("| captchas | count | " + " | ".join(f"{m} misreads" for m in FLAGS.models) + " | every model misreads |")
    print("|---|---|" + "---|" * (len(FLAGS.models) + 1))
    for name, members in groups:
        n = int(members.sum())
        cells = [f"{int(w[members].sum())} ({w[members].mean():.1%})" if n else "—" for w in wrong]
        last = f"{int(every[members].sum())} ({every[members].mean():.1%})" if n else "—"
        print(f"| {name} | {n} | " + " | ".join(cells) + f" | {last} |")
    print(f"| all | {FLAGS.count} | " + " | ".join(str(int(w.sum())) for w in wrong) + f" | {int(every.sum())} |")


if __name__ == "__main__":
    app.run(main)
