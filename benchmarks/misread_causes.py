"""Which nuisance makes a model misread? Redraw each held-out captcha without one, and read it again.

    python benchmarks/misread_causes.py --models=alnum --seed=20261129 --sheet=docs/alnum_misread_causes.png

The held-out captchas of the first model's task (`--seed`, as `bin/generate` draws them) are drawn as
they are, then again with one nuisance left out. The same random numbers are drawn, so the label, font,
size, colours and placement stay; only the nuisance goes. In kcaptcha's own look (`kcaptcha.styles`):
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
from library_look import recording_create_captcha_image  # noqa: E402
from readers import float32_reader  # noqa: E402

flags.DEFINE_list("models", ["alnum"], "Model names or folders; the first decides the task.")
flags.DEFINE_integer("count", 2000, "Held-out captchas.")
flags.DEFINE_integer("seed", 20_261_129, "Their seed (one training never uses).")
flags.DEFINE_string("sheet", "", "If set, a PNG of the first model's misreads: as drawn, and redrawn "
                    "without every nuisance, with what it read in each.")
flags.DEFINE_integer("sheet_limit", 24, "At most this many misreads on the sheet, half from each look.")
FLAGS = flags.FLAGS

LIBRARY_NUISANCES = ("noise dots", "noise curve", "overlap")


def _left_out_copy(method):
    """A static `ImageCaptcha` noise method that draws on a copy (so the image keeps none of it) and draws
    the same random numbers."""

    def draw_on_copy(image, *args, **kwargs):
        method(image.copy(), *args, **kwargs)
        return image

    return staticmethod(draw_on_copy)


def render_library(renderer, indices, without):
    """RGB arrays of the library-look captchas `indices`, drawn with LIBRARY_NUISANCES `without` left out."""
    import numpy as np
    from captcha import image as captcha_image

    cls = captcha_image.ImageCaptcha
    saved = cls.create_captcha_image, cls.__dict__["create_noise_dots"], cls.__dict__["create_noise_curve"]
    if "overlap" in without:
        cls.create_captcha_image = recording_create_captcha_image([], apart=True)
    if "noise dots" in without:
        cls.create_noise_dots = _left_out_copy(cls.create_noise_dots)
    if "noise curve" in without:
        cls.create_noise_curve = _left_out_copy(cls.create_noise_curve)
    try:
        return [np.asarray(renderer.render(i)[1]) for i in indices]
    finally:
        cls.create_captcha_image, cls.create_noise_dots, cls.create_noise_curve = saved


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    from kcaptcha import saving, styles
    from kcaptcha.config import Config
    from kcaptcha.generate import LOOK_KCAPTCHA, CaptchaRenderer

    config = Config.from_dict(saving.read_metadata(saving.resolve_model_dir(FLAGS.models[0]))["config"])
    renderer = CaptchaRenderer.from_config(config, seed=FLAGS.seed)
    labels = [renderer.label(i) for i in range(FLAGS.count)]
    own = np.array([renderer.look(i) == LOOK_KCAPTCHA for i in range(FLAGS.count)])
    looks = [("kcaptcha's own look", np.flatnonzero(own), styles.NUISANCES),
             ("library look", np.flatnonzero(~own), LIBRARY_NUISANCES)]
    readers = [float32_reader(model) for model in FLAGS.models]

    def misread(indices, pictures):
        images = np.stack(pictures)  # RGB: each model makes its gray as load_model does
        return [np.array([p.text != labels[i] for p, i in zip(r.predict(images), indices)]) for r in readers]

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
        base = misread(indices, as_drawn)

        def cells(values):
            return " / ".join(str(int(v.sum())) for v in values)

        print(f"| {name} ({len(indices)}) | nothing | {cells(base)} | — | — |")
        for without in [(n,) for n in nuisances] + [tuple(nuisances)]:
            now = misread(indices, draw(without))
            fixed = [b & ~n for b, n in zip(base, now)]
            new = [~b & n for b, n in zip(base, now)]
            label = "all" if len(without) > 1 else without[0]
            print(f"| {name} | {label} | {cells(now)} | {cells(fixed)} | {cells(new)} |")
            if len(without) > 1 and FLAGS.sheet:
                plain = draw(without)
                texts = [p.text for p in readers[0].predict(np.stack(as_drawn))]
                plain_texts = [p.text for p in readers[0].predict(np.stack(plain))]
                for k in np.flatnonzero(base[0])[:FLAGS.sheet_limit // 2]:
                    sheet.append((as_drawn[k], plain[k], labels[indices[k]], texts[k], plain_texts[k]))
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
