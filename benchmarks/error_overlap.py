"""Do different models misread the same captchas? Pairwise overlap of their misreads, against chance.

    python benchmarks/error_overlap.py --test_dir=/tmp/heldout_alnum \
        --models=runs/exp/saved_s5,runs/exp/saved_s7x1,runs/capacity/saved_32_64_128_192 --sheet=/tmp/all_wrong.png

Each model reads every image of --test_dir (file names are the labels), in float32 (Keras where a model
folder has no ONNX export). For each pair it prints how many images both misread, and how many they would
share if their misreads were independent (product of the two error rates times the image count). Misreads
shared far beyond chance by models of other widths, seeds and lineages point to captchas that are hard in
themselves; --sheet draws the ones every model misreads, with the truth and the first model's reading.
"""

import itertools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from readers import float32_reader  # noqa: E402
from sheets import contact_sheet  # noqa: E402

flags.DEFINE_string("test_dir", None, "Folder of labelled captchas (labels in the file names).")
flags.DEFINE_list("models", None, "Model names or folders (two or more).")
flags.DEFINE_string("sheet", None, "Draw the captchas every model misreads here (a PNG).")
flags.mark_flags_as_required(["test_dir", "models"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from PIL import Image

    from kcaptcha.reading.evaluate import label_for
    from kcaptcha.files import LabelRule, list_images

    if len(FLAGS.models) < 2:
        raise SystemExit("--models needs two or more models")
    readers = {model: float32_reader(model) for model in FLAGS.models}
    rule = LabelRule.parse("prefix")
    truth = {path: label_for(path, readers[FLAGS.models[0]].vocab, rule) for path in list_images(FLAGS.test_dir)}
    paths = [path for path, label in truth.items() if label]
    labels = [truth[path] for path in paths]
    images = [Image.open(path) for path in paths]
    readings, wrong = {}, {}
    print(f"{len(paths)} captchas in {FLAGS.test_dir}\n\n| model | misread |\n|---|---|")
    for model in FLAGS.models:
        readings[model] = [p.text for p in readers[model].predict(images)]
        wrong[model] = {i for i, (r, t) in enumerate(zip(readings[model], labels)) if r != t}
        print(f"| {model} | {len(wrong[model])} |", flush=True)
    print("\n| models | both misread | if independent |\n|---|---|---|")
    for a, b in itertools.combinations(FLAGS.models, 2):
        print(f"| {a} & {b} | {len(wrong[a] & wrong[b])} | {len(wrong[a]) * len(wrong[b]) / len(paths):.1f} |")
    every = sorted(set.intersection(*wrong.values()))
    print(f"\nmisread by every model: {len(every)}")
    first = FLAGS.models[0]
    for i in every:
        print(f"  {os.path.basename(paths[i])}: truth {labels[i]}, read " +
              ", ".join(readings[m][i] for m in FLAGS.models))
    if FLAGS.sheet and every:
        sheet = contact_sheet([(images[i], f"{labels[i]}  read {readings[first][i]}") for i in every], (320, 120))
        sheet.save(FLAGS.sheet)
        print(f"sheet: {FLAGS.sheet}")


if __name__ == "__main__":
    app.run(main)
