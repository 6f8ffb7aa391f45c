"""The six real captcha sets in ../shared/data, each with one fixed test split, and the folder that the
`general` base model is trained on (every set's training split, never its test split).

    python benchmarks/real_sets.py --output_dir=data/general_train            # all six sets
    python benchmarks/real_sets.py --output_dir=data/twin_train --leave_out=v2,mnwato

The test split of a set is fixed: its image paths sorted, permuted with seed 0, and the first
min(500, 25%) of them are its test images. Labels come from each file's name (`<label>.png` or
`<label>_<n>.jpg`); the pretraining folder lowercases them, since the six sets' sites read case-blind.
"""

import json
import os
import sys

import numpy as np

SETS = {
    "v2": "captcha_images_v2",
    "amazon": "amazon_6letter",
    "swust19": "swust_cas_2019_4char",
    "swust20": "swust_cas_2020_4char",
    "mnwato": "mnwato_4digit",
    "hfut": "hfut_jwxt_4char",
}
TEST_SHARE, TEST_MAX, SPLIT_SEED = 0.25, 500, 0
DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                            "shared", "data")


def labelled(folder: str):
    """(paths, labels) of a folder of `<label>.png` or `<label>_<n>.jpg` files, paths sorted."""
    from kcaptcha.files import LabelRule, list_images

    rule = LabelRule.parse("prefix")
    paths = sorted(list_images(folder))
    return paths, [rule.label(path) for path in paths]


def test_split(count: int):
    """(test indices, training indices) of a set of `count` images: the fixed split every benchmark uses."""
    order = np.random.default_rng(SPLIT_SEED).permutation(count)
    cut = min(TEST_MAX, round(count * TEST_SHARE))
    return order[:cut], order[cut:]


def read_results(path: str) -> list:
    """The runs recorded so far (one JSON per line); creates the results folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def readable(path: str) -> bool:
    """Whether the image at `path` decodes whole (a truncated file does not)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
        return True
    except (OSError, ValueError):
        return False


def write_training_folder(data_dir: str, output_dir: str, names) -> dict:
    """Links every readable training-split image of the sets `names` into `output_dir` as
    `<lowercase label>_<set>_<file>`; returns {set: images linked}. Never touches the sets themselves.
    (hfut_jwxt_4char's ygg3_460.png is truncated and left out.)"""
    os.makedirs(output_dir, exist_ok=True)
    counts = {}
    for name in names:
        paths, labels = labelled(os.path.join(data_dir, SETS[name]))
        _, train = test_split(len(paths))
        train = [index for index in train if readable(paths[index])]
        for index in train:
            stem = os.path.basename(paths[index])
            link = os.path.join(output_dir, f"{labels[index].lower()}_{name}_{stem}")
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(paths[index]), link)
        counts[name] = len(train)
    return counts


def main(argv):
    del argv
    from absl import flags

    names = [n for n in SETS if n not in flags.FLAGS.leave_out]
    counts = write_training_folder(flags.FLAGS.data_dir, flags.FLAGS.output_dir, names)
    print(f"linked {sum(counts.values())} training images into {flags.FLAGS.output_dir}: {counts}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from absl import app, flags

    flags.DEFINE_string("data_dir", DEFAULT_DATA, "Where the six sets are.")
    flags.DEFINE_string("output_dir", None, "The folder of links to write.", required=True)
    flags.DEFINE_list("leave_out", [], f"Sets to leave out (of {', '.join(SETS)}).")
    app.run(main)
