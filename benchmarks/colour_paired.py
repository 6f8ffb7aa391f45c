"""Misreads of a colour_probe colour model and a luma model, paired image by image on the held-out seeds.

    python benchmarks/colour_paired.py --model=runs/exp/saved_s5 --colour=runs/exp/colour_k3/colour.keras \
        --luma=runs/exp/luma_ctrl2/luma.keras

Both read the same rendered captchas (RGB for the colour model, luma for the other). For each seed and look it
prints how many each misreads, how many only one of them misreads, and an exact two-sided sign test on those.
"""
import os
from math import comb

from absl import app, flags

import colour_probe

flags.DEFINE_string("colour", None, "The colour model (colour_probe's colour.keras).", required=True)
flags.DEFINE_string("luma", None, "The luma model (a .keras file).", required=True)
FLAGS = flags.FLAGS


def sign_test(b: int, c: int) -> float:
    n = b + c
    return min(1.0, 2 * sum(comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n) if n else 1.0


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from kcaptcha import models

    from kcaptcha.export import saving
    from kcaptcha.config import Config
    from kcaptcha.data.generate import LOOK_KCAPTCHA
    from kcaptcha.reading.vocab import Vocab

    metadata = saving.read_metadata(saving.resolve_model_dir(FLAGS.model))
    config = Config.from_dict(metadata["config"])
    vocab = Vocab.from_config(config)
    models.get(metadata["architecture"]).load()
    arms = {arm: keras.models.load_model(path, compile=False) for arm, path in (("colour", FLAGS.colour),
                                                                                 ("luma", FLAGS.luma))}
    totals = [0, 0]
    print("| seed | look | luma misreads | colour misreads | only luma | only colour | sign test p |")
    print("|---|---|---|---|---|---|---|")
    for seed in FLAGS.test_seeds:
        labels, pictures, looks = colour_probe.render(config, int(seed), FLAGS.count)
        wrong = {arm: colour_probe.misread_mask(model, pictures, labels, arm, metadata, vocab)
                 for arm, model in arms.items()}
        own = looks == LOOK_KCAPTCHA
        for look, mask in (("own", own), ("library", ~own)):
            only_luma = int((wrong["luma"] & ~wrong["colour"] & mask).sum())
            only_colour = int((wrong["colour"] & ~wrong["luma"] & mask).sum())
            totals[0] += only_luma
            totals[1] += only_colour
            print(f"| {seed} | {look} | {int((wrong['luma'] & mask).sum())} | {int((wrong['colour'] & mask).sum())} "
                  f"| {only_luma} | {only_colour} | {sign_test(only_luma, only_colour):.3f} |", flush=True)
    print(f"| all | all | | | {totals[0]} | {totals[1]} | {sign_test(*totals):.3f} |")


if __name__ == "__main__":
    app.run(main)
