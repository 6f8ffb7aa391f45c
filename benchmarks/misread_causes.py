"""Which nuisance makes a model misread? Redraw each held-out captcha without one, and read it again.

    python benchmarks/misread_causes.py --models=alnum --seed=20261129 --sheet=docs/alnum_misread_causes.png

The held-out captchas of the first model's task (`--seed`, as `bin/generate` draws them) are drawn as
they are, then again with one nuisance left out. The same random numbers are drawn, so the label, font,
size, colours and placement stay; only the nuisance goes. In kcaptcha's own look (`kcaptcha.data.styles`):
overlap (characters kept a tenth of a glyph apart), rotation, lines, dots, warp, blur, and all six at
once. In the `captcha` library's look: its noise dots, its noise curve, overlap (each character pasted
after the last instead of stepping back over it; wide text is squeezed to the width as the library
squeezes it), and the three at once. A misread that reads right once a nuisance is gone is counted as
that nuisance's; a captcha can count for several. Each model reads the colour captchas in float32,
making its own gray as `load_model` does.
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
flags.DEFINE_string("sheet", "", "If set, a PNG of the first model's misreads: as drawn, and redrawn "
                    "without every nuisance, with what it read in each.")
flags.DEFINE_integer("sheet_limit", 24, "At most this many misreads on the sheet, half from each look.")
FLAGS = flags.FLAGS

LIBRARY_NUISANCES = ("noise dots", "noise curve", "overlap")


def render_library(renderer, indices, without):
    """RGB arrays of the library-look captchas `indices`, drawn with LIBRARY_NUISANCES `without` left out."""
    import numpy as np

    noise = [name.split()[1] for name in without if name.startswith("noise ")]
    with drawing(apart="overlap" in without, without_noise=noise):
        return [np.asarray(renderer.render(i)[1]) for i in indices]


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    from kcaptcha.export import saving

    from kcaptcha.data import styles
    from kcaptcha.config import Config
    from kcaptcha.data.generate import LOOK_KCAPTCHA, CaptchaRenderer

    config = Config.from_dict(saving.read_metadata(saving.resolve_model_dir(FLAGS.models[0]))["config"])
    renderer = CaptchaRenderer.from_config(config, seed=FLAGS.seed)
    labels = [renderer.label(i) for i in range(FLAGS.count)]
    own = np.array([renderer.look(i) == LOOK_KCAPTCHA for i in range(FLAGS.count)])
    looks = [("kcaptcha's own look", np.flatnonzero(own), styles.NUISANCES),
             ("library look", np.flatnonzero(~own), LIBRARY_NUISANCES)]
    readers = [float32_reader(model) for model in FLAGS.models]

    def read(pictures):
        """Each model's texts; RGB in, so each model makes its gray as load_model does."""
        images = np.stack(pictures)
        return [[p.text for p in r.predict(images)] for r in readers]

    def wrong(indices, texts):
        return [np.array([t != labels[i] for t, i in zip(model_texts, indices)]) for model_texts in texts]

    def cells(values):
        return " / ".join(str(int(v.sum())) for v in values)

    print(f"{FLAGS.count} held-out captchas, seed {FLAGS.seed}; misreads per model: "
          + ", ".join(FLAGS.models) + "\n")
    print("| look | left out | misread | fixed | newly misread |")
    print("|---|---|---|---|---|")
    sheet = []
    for name, indices, nuisances in looks:
        if not len(indices):
            continue
        if name == "library look":
            draw = lambda without: render_library(renderer, indices, without)  # noqa: E731
        else:
            draw = lambda without: [np.asarray(renderer.render(i, without)[1]) for i in indices]  # noqa: E731
        as_drawn = draw(())
        base_texts = read(as_drawn)
        base = wrong(indices, base_texts)
        print(f"| {name} ({len(indices)}) | nothing | {cells(base)} | — | — |")
        for without in [(n,) for n in nuisances] + [tuple(nuisances)]:
            redrawn = draw(without)
            texts = read(redrawn)
            now = wrong(indices, texts)
            fixed = [b & ~n for b, n in zip(base, now)]
            new = [~b & n for b, n in zip(base, now)]
            label = "all" if len(without) > 1 else without[0]
            print(f"| {name} | {label} | {cells(now)} | {cells(fixed)} | {cells(new)} |")
            if len(without) > 1:
                for k in np.flatnonzero(base[0])[:FLAGS.sheet_limit // 2]:
                    sheet.append((as_drawn[k], redrawn[k], labels[indices[k]], base_texts[0][k], texts[0][k]))
    if FLAGS.sheet:
        write_sheet(sheet, FLAGS.sheet)
        print(f"\n{len(sheet)} misreads (half from each look at most) drawn to {FLAGS.sheet}")


def write_sheet(rows, path: str) -> None:
    """Each misread twice, as drawn and without every nuisance, each captioned with what the model read."""
    from PIL import Image
    from sheets import contact_sheet

    cells = []
    for picture, plain, truth, read, plain_read in rows:
        cells.append((Image.fromarray(picture), f"{truth}: read {read}"))
        cells.append((Image.fromarray(plain), f"without nuisances: {plain_read}"))
    sheet = contact_sheet(cells, (240, 90), columns=4,
                          title="misreads as drawn (left) and redrawn without every nuisance (right)")
    sheet.quantize(128).save(path, optimize=True)  # a palette: a third of the bytes


if __name__ == "__main__":
    app.run(main)
