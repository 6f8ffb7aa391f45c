"""How many of a model's misreads a person can read: a blind reading that estimates a test set's ceiling.

    python benchmarks/human_ceiling.py --mode=make --model=alnum --test_dir=DIR --out=/tmp/hc
    # read /tmp/hc/sheet_*.png and write what each numbered captcha says into /tmp/hc/answers.txt
    python benchmarks/human_ceiling.py --mode=score --out=/tmp/hc

`make` reads --test_dir with the model, then puts every image it misreads together with --sample images it
reads right, shuffled, on numbered contact sheets (no labels, no readings). Their truth, the model's reading
and which group each came from go to `key.json`: the reader must not open it (nor look at the file names)
before `score`. The reader writes one line per number in `answers.txt` (`17 x4rbdw`): a best guess for every
image, as the model has to give one.

`score` compares the answers with the truth and reports:
- of the model's misreads, how many the reader read right (errors a better model could avoid) and how many
  the reader missed too (the set's hard or unreadable images);
- the reader's accuracy on the sampled images the model reads right;
- the reader's estimated accuracy on the whole set: its misses among the misreads, plus its misses among
  the sample scaled to all the images the model reads right. The reader's own slips count against it, so
  this is an estimate of what a careful person reads, not a proof of what is readable.
"""

import json
import os
import random
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app, flags  # noqa: E402
from sheets import contact_sheet  # noqa: E402

flags.DEFINE_enum("mode", None, ["make", "score"], "make the sheets, or score the answers.")
flags.DEFINE_string("model", "alnum", "Model (name or folder) whose misreads are read again.")
flags.DEFINE_string("test_dir", None, "Labelled test images (labels from file names, as bin/evaluate).")
flags.DEFINE_string("label_from", "prefix", "Where the file names carry their labels (as bin/evaluate).")
flags.DEFINE_integer("sample", 120, "Images the model reads right, mixed in so that the reader cannot tell.")
flags.DEFINE_integer("seed", 0, "Seed of the sample and the shuffle.")
flags.DEFINE_integer("per_sheet", 24, "Captchas per sheet (3 columns).")
flags.DEFINE_integer("scale", 3, "Enlarge each captcha this many times on the sheet.")
flags.DEFINE_string("out", None, "Folder for the sheets, key.json and answers.txt (created; not overwritten).")
FLAGS = flags.FLAGS

COLUMNS = 3


def make(out: str) -> None:
    import kcaptcha
    from kcaptcha.reading.evaluate import label_for, predict_paths
    from kcaptcha.files import LabelRule, atomic_write_json, atomic_write_text, list_images

    if os.path.exists(os.path.join(out, "key.json")):
        raise SystemExit(f"{out} already holds a key.json: choose another --out (answers are not overwritten)")
    recognizer = kcaptcha.load_model(FLAGS.model)
    rule = LabelRule.parse(FLAGS.label_from)
    truth = {path: label_for(path, recognizer.vocab, rule) for path in list_images(FLAGS.test_dir)}
    paths = [path for path, label in truth.items() if label]
    readings = {path: prediction.text for path, prediction, _ in predict_paths(recognizer, paths) if prediction}
    misread = [path for path in readings if readings[path] != truth[path]]
    right = [path for path in readings if readings[path] == truth[path]]
    rng = random.Random(FLAGS.seed)
    shown = [(path, "misread") for path in misread] + [(path, "right") for path in
                                                       rng.sample(right, min(FLAGS.sample, len(right)))]
    rng.shuffle(shown)

    os.makedirs(out, exist_ok=True)
    width, height = recognizer.metadata["width"] * FLAGS.scale, recognizer.metadata["height"] * FLAGS.scale
    for first in range(0, len(shown), FLAGS.per_sheet):
        cells = [(path, f"#{first + i + 1}") for i, (path, _) in enumerate(shown[first:first + FLAGS.per_sheet])]
        sheet = contact_sheet(cells, (width, height), columns=COLUMNS, caption_above=True, caption_color="black")
        sheet.save(os.path.join(out, f"sheet_{first // FLAGS.per_sheet + 1:02d}.png"))
    atomic_write_json(os.path.join(out, "key.json"), {
        "model": FLAGS.model, "test_dir": os.path.abspath(FLAGS.test_dir), "images": len(readings),
        "misread": len(misread), "right": len(right),
        "shown": [{"number": n, "path": path, "group": group, "truth": truth[path], "model": readings[path]}
                  for n, (path, group) in enumerate(shown, start=1)]}, indent=1)
    answers = os.path.join(out, "answers.txt")
    if not os.path.exists(answers):
        atomic_write_text(answers, "".join(f"{n} \n" for n in range(1, len(shown) + 1)))
    sheets = (len(shown) + FLAGS.per_sheet - 1) // FLAGS.per_sheet
    print(f"{len(shown)} captchas on {sheets} sheets in {out} (the model read {len(readings)}); "
          f"write what each says in {answers}, then run --mode=score")


def read_answers(path: str) -> dict:
    answers = {}
    with open(path) as f:
        for line_number, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[0].isdigit():
                raise SystemExit(f"{path}:{line_number}: expected `<number> <text>`, got {line.strip()!r}")
            answers[int(parts[0])] = parts[1].lower()
    return answers


def score(out: str) -> dict:
    with open(os.path.join(out, "key.json")) as f:
        key = json.load(f)
    answers = read_answers(os.path.join(out, "answers.txt"))
    missing = [entry["number"] for entry in key["shown"] if entry["number"] not in answers]
    if missing:
        raise SystemExit(f"answers.txt has no answer for {len(missing)} captchas: {missing[:20]}")
    groups = {"misread": [], "right": []}
    for entry in key["shown"]:
        groups[entry["group"]].append({**entry, "reader": answers[entry["number"]]})
    reader_right = {group: sum(e["reader"] == e["truth"] for e in entries) for group, entries in groups.items()}
    misread, sample = groups["misread"], groups["right"]
    reader_misses = (len(misread) - reader_right["misread"]
                     + (len(sample) - reader_right["right"]) * key["right"] / max(1, len(sample)))
    result = {
        "model": key["model"], "test_dir": key["test_dir"], "images": key["images"],
        "model_accuracy": key["right"] / key["images"],
        "model_misreads": len(misread),
        "misreads_reader_read_right": reader_right["misread"],
        "misreads_reader_missed_too": len(misread) - reader_right["misread"],
        "sample": len(sample), "sample_reader_read_right": reader_right["right"],
        "reader_estimated_accuracy": 1 - reader_misses / key["images"],
        "model_accuracy_if_it_read_what_the_reader_reads": (key["right"] + reader_right["misread"]) / key["images"],
    }
    print(f"model {key['model']}: {key['right']} of {key['images']} right ({result['model_accuracy']:.2%})")
    print(f"its {len(misread)} misreads: the reader read {reader_right['misread']} right, "
          f"missed {len(misread) - reader_right['misread']}")
    print(f"sample of {len(sample)} the model reads right: the reader read {reader_right['right']} right")
    print(f"reader's estimated accuracy on the whole set: {result['reader_estimated_accuracy']:.2%}")
    print(f"the model plus the misreads the reader gets right: "
          f"{result['model_accuracy_if_it_read_what_the_reader_reads']:.2%}")
    print("\nnumber  truth    model    reader")
    for entry in sorted(misread + [e for e in sample if e["reader"] != e["truth"]], key=lambda e: e["number"]):
        marks = "" if entry["group"] == "misread" else "   (model right)"
        print(f"{entry['number']:>6}  {entry['truth']:<8} {entry['model']:<8} {entry['reader']:<8}{marks}")
    return result


def main(argv):
    del argv
    if not FLAGS.out:
        raise app.UsageError("--out is required")
    if FLAGS.mode == "make":
        if not FLAGS.test_dir:
            raise app.UsageError("--mode=make needs --test_dir")
        make(FLAGS.out)
    else:
        result = score(FLAGS.out)
        from kcaptcha.files import atomic_write_json
        atomic_write_json(os.path.join(FLAGS.out, "score.json"), result, indent=1)


if __name__ == "__main__":
    flags.mark_flag_as_required("mode")
    app.run(main)
