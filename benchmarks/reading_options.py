"""Ways of reading with one trained model, side by side on the same test images.

    python benchmarks/reading_options.py --models=alnum --test_dirs=/tmp/heldout_alnum
    python benchmarks/reading_options.py --models=runs/fold0/model,runs/fold1/model \
        --test_dirs=data/fold0/test,data/fold1/test --tta=8 --tta_below=0.9

- greedy: CTC decoding with no length rule (a text of a length the model never reads kept as it is);
- default: how `Recognizer` reads (such a text read again as the best frame path of an allowed length);
- tta=N: the default, also on N warped copies that vote (`load_model(..., tta=N, tta_below=1)`), for every
  image;
- tta=N<C: the same for the images the default reads with a confidence under C only (`tta_below=C`).
Each model reads the test folder in the same place of --test_dirs; the last table row adds them up. Times
are whole `predict` calls over the test images, on the --backend asked for.
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app, flags  # noqa: E402

flags.DEFINE_list("models", None, "Models (names or folders), each reading the test folder in the same place "
                  "of --test_dirs.")
flags.DEFINE_list("test_dirs", None, "Labelled test folders, one per model.")
flags.DEFINE_string("label_from", "prefix", "Where the test file names carry their labels (as bin/evaluate).")
flags.DEFINE_list("tta", ["4", "8", "16"], "Warped copies to compare (load_model's tta).")
flags.DEFINE_list("tta_below", ["1"], "With each --tta: read in copies the images read with a confidence under "
                  "this (load_model's tta_below; 1: every image).")
flags.DEFINE_string("backend", "keras", "The backend every reading runs on (a run saved with --noexport has "
                    "no ONNX export).")
FLAGS = flags.FLAGS


def compare(model: str, paths, labels) -> dict:
    import time

    import numpy as np

    import kcaptcha
    from kcaptcha.reading import decoding
    from kcaptcha.reading.vocab import Vocab

    recognizer = kcaptcha.load_model(model, backend=FLAGS.backend)
    logits = np.concatenate([recognizer.logits(np.stack([recognizer.preprocess(p) for p in paths[i:i + 256]]))
                             for i in range(0, len(paths), 256)])
    vocab = recognizer.vocab
    greedy = decoding.decode(logits, "ctc", Vocab(vocab.charset, 0, logits.shape[1]))
    now = decoding.decode(logits, "ctc", vocab)
    changed = [i for i, (g, n) in enumerate(zip(greedy, now)) if g.text != n.text]
    report = {"model": model, "images": len(paths),
              "misread": {"greedy": sum(g.text != t for g, t in zip(greedy, labels))},  # then each of the loop's
              "ms_per_image": {}, "read_in_copies": {},
              "read_again": len(changed), "made_right": sum(now[i].text == labels[i] for i in changed),
              "examples": [f"{labels[i]}: {greedy[i].text} -> {now[i].text}" for i in changed[:12]]}
    ways = [(0, 1.0)] + [(int(c), float(b)) for c in FLAGS.tta for b in FLAGS.tta_below]
    for count, below in ways:
        reader = kcaptcha.load_model(model, backend=FLAGS.backend, tta=count, tta_below=below)
        started = time.perf_counter()
        readings = reader.predict(list(paths))
        name = "default" if not count else f"tta={count}" if below >= 1.0 else f"tta={count}<{below:g}"
        report["ms_per_image"][name] = round((time.perf_counter() - started) * 1000 / len(paths), 2)
        report["misread"][name] = sum(r.text != t for r, t in zip(readings, labels))
        if not count:
            confidences = np.array([r.confidence for r in readings])
        else:
            report["read_in_copies"][name] = round(float(np.mean((confidences < below) | (below >= 1.0))), 3)
    return report


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from kcaptcha.files import LabelRule, list_images

    if not FLAGS.models or not FLAGS.test_dirs or len(FLAGS.models) != len(FLAGS.test_dirs):
        raise app.UsageError("give --models and --test_dirs, one test folder per model")
    rule = LabelRule.parse(FLAGS.label_from)
    reports = []
    for model, test_dir in zip(FLAGS.models, FLAGS.test_dirs):
        paths = list_images(test_dir)
        reports.append(compare(model, paths, [rule.label(p) for p in paths]))
    names = list(reports[0]["misread"])
    print(f"| model | images | {' | '.join(names)} |")
    print(f"|---|---|{'---|' * len(names)}")
    for report in reports:
        cells = [f"{report['misread'][n]}" + (f" ({report['ms_per_image'][n]} ms)" if n in report["ms_per_image"]
                                              else "") for n in names]
        print(f"| {report['model']} | {report['images']} | {' | '.join(cells)} |")
    print(f"| all | {sum(r['images'] for r in reports)} | "
          f"{' | '.join(str(sum(r['misread'][n] for r in reports)) for n in names)} |")
    print("misread per way of reading (ms per image); share of the images read in copies:")
    for name in names[2:]:
        shares = [r["read_in_copies"][name] * r["images"] for r in reports]
        print(f"  {name}: {sum(shares) / sum(r['images'] for r in reports):.3f}")
    print("lengths read again by the default:")
    for report in reports:
        print(f"  {report['model']}: {report['read_again']} read again, {report['made_right']} of them made right: "
              f"{'; '.join(report['examples'])}")


if __name__ == "__main__":
    app.run(main)
