"""What benchmarks/real_data.py and benchmarks/flywheel.py share: the real sets in ../shared/data, their
labels (each file's stem), and the results file a run appends to and resumes from. No flags here."""

import json
import os

SETS = {"v2": "captcha_images_v2", "amazon": "amazon_6letter"}


def labelled(folder: str):
    """(paths, labels) of a folder of `<label>.png` files."""
    from kcaptcha.files import LabelRule, list_images

    rule = LabelRule.parse("stem")
    paths = list_images(folder)
    return paths, [rule.label(path) for path in paths]


def read_results(path: str) -> list:
    """The runs recorded so far (one JSON per line); creates the results folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
