"""Where a model trained on synthetic captchas misreads: by look, by confused pair, and `o`/`0` by font size.

    python benchmarks/alnum_errors.py --model=alnum            # 2000 held-out captchas, seed 20261129

It draws the held-out captchas of the model's task (the seed the shipped-model tables use), reads them with
`kcaptcha.load_model`, and prints:
- whole-image accuracy for each look of `--style=varied`: the `captcha` library's (a font and a size drawn
  for every character) and kcaptcha's own (`kcaptcha.data.styles`: one font and size per image);
- the same with look-alike characters folded (`o`->`0`, `l`,`i`,`j`->`1`) in truth and reading;
- the most frequent confusions (same-length readings, character by character; other lengths counted apart);
- for `o` and `0` in the `captcha` library's look, how often each is read as the other at each font size:
  the library draws every character at its own size, so a large `o` and a small `0` can be the same height.
"""

import collections
import contextlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string("model", "alnum", "Model name or folder.")
flags.DEFINE_integer("count", 2000, "Held-out captchas.")
flags.DEFINE_integer("seed", 20_261_129, "Their seed (one training never uses).")
flags.DEFINE_string("output_json", None, "Write the results here too.")
FLAGS = flags.FLAGS

FOLD = str.maketrans("olji", "0111")


@contextlib.contextmanager
def recording_character_sizes(sizes: list):
    """While open, appends the font size of every character the `captcha` library draws to `sizes`."""
    import captcha.image as captcha_image

    original = captcha_image.ImageCaptcha._draw_character

    def draw_character(self, char, draw, color):
        chosen = []
        choice = captcha_image.secrets.choice  # the seeded generator kcaptcha patches in
        captcha_image.secrets.choice = lambda seq: chosen.append(choice(seq)) or chosen[-1]
        try:
            image = original(self, char, draw, color)
        finally:
            del captcha_image.secrets.choice  # back to the class's own method
        if char != " ":
            sizes.append(chosen[0].size)
        return image

    captcha_image.ImageCaptcha._draw_character = draw_character
    try:
        yield
    finally:
        captcha_image.ImageCaptcha._draw_character = original


def render(renderer, index: int):
    """(label, image, look, per-character font sizes or None) of held-out captcha `index`."""
    from kcaptcha.data.generate import LOOK_CAPTCHA_LIBRARY

    look = renderer.look(index)
    sizes = []
    with recording_character_sizes(sizes):
        label, image = renderer.render(index)
    return label, image, look, (sizes if look == LOOK_CAPTCHA_LIBRARY else None)


def confusions(truths, readings) -> collections.Counter:
    counted = collections.Counter()
    for truth, reading in zip(truths, readings):
        if truth == reading:
            continue
        if len(truth) != len(reading):
            counted["(another length)"] += 1
            continue
        counted.update(f"{a}->{b}" for a, b in zip(truth, reading) if a != b)
    return counted


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    from kcaptcha.data.generate import CaptchaRenderer
    from kcaptcha.reading.recognizer import load_model

    recognizer = load_model(FLAGS.model)
    renderer = CaptchaRenderer.from_metadata(recognizer.metadata, FLAGS.seed)
    drawn = [render(renderer, i) for i in range(FLAGS.count)]
    readings = [p.text for p in recognizer.predict([image for _, image, _, _ in drawn])]
    results = {"model": FLAGS.model, "count": FLAGS.count, "seed": FLAGS.seed, "by_look": {}}
    print(f"{FLAGS.model}: {FLAGS.count} held-out captchas (seed {FLAGS.seed}), backend {recognizer.backend}")
    looks = sorted({look for _, _, look, _ in drawn})
    for look in looks + ["all"]:
        chosen = [i for i, d in enumerate(drawn) if look in ("all", d[2])]
        truths, reads = [drawn[i][0] for i in chosen], [readings[i] for i in chosen]
        entry = {"images": len(chosen), "image_accuracy": float(np.mean([t == r for t, r in zip(truths, reads)])),
                 "folded_image_accuracy": float(np.mean([t.translate(FOLD) == r.translate(FOLD)
                                                         for t, r in zip(truths, reads)])),
                 "confusions": dict(confusions(truths, reads).most_common(12))}
        results["by_look"][look] = entry
        print(f"  {look:16} {len(chosen):5} images  whole-image {entry['image_accuracy']:.4f}  "
              f"look-alikes folded {entry['folded_image_accuracy']:.4f}")
        print(f"  {'':16} most confused: " + ", ".join(f"{k} x{v}" for k, v in entry["confusions"].items()))
    by_size = collections.defaultdict(lambda: [0, 0])
    for (label, _, _, sizes), reading in zip(drawn, readings):
        if sizes is None:
            continue
        for k, char in enumerate(label):
            if char in "o0":
                counts = by_size[f"{char} at {sizes[k]} px"]
                counts[0] += 1
                counts[1] += len(reading) == len(label) and reading[k] == ("0" if char == "o" else "o")
    results["o_0_by_font_size"] = {k: {"seen": n, "read_as_the_other": m} for k, (n, m) in sorted(by_size.items())}
    if by_size:
        print("  o and 0 in the captcha library's look, read as the other:")
        for key, (seen, wrong) in sorted(by_size.items()):
            print(f"    {key:10} {wrong:3} of {seen:3} ({100 * wrong / seen:.1f}%)")
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    app.run(main)
