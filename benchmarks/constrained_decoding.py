"""Greedy CTC decoding against reading impossible lengths again (`kcaptcha.decoding`), on the same logits.

    python benchmarks/constrained_decoding.py --model=alnum --test_dir=/tmp/heldout_alnum
    python benchmarks/constrained_decoding.py --results=benchmarks/results/real_data.jsonl --runs_dir=runs/keep

Each model reads its test images once; the logits are decoded twice: greedily with no length rule (what
`kcaptcha` did before: a text of a length the model never reads, confidence 0), and as `Recognizer` reads
now (such a text read again as the best frame path of an allowed length). With --results, every run of
benchmarks/real_data.py kept under --runs_dir (`--runs_dir` there too) is read on its own test split.
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app, flags  # noqa: E402

from real_sets import SETS, labelled, read_results  # noqa: E402

flags.DEFINE_string("model", None, "A model (name or folder) to read --test_dir with.")
flags.DEFINE_string("test_dir", None, "Labelled test images for --model.")
flags.DEFINE_string("label_from", "prefix", "Where --test_dir's file names carry their labels (as bin/evaluate).")
flags.DEFINE_string("results", None, "A benchmarks/real_data.py results file: read each run kept under --runs_dir.")
flags.DEFINE_string("runs_dir", "runs/keep", "Where benchmarks/real_data.py --runs_dir kept its runs.")
flags.DEFINE_string("data_dir", os.path.join(os.path.dirname(REPO), "shared", "data"), "Where the real sets are.")
FLAGS = flags.FLAGS


def compare(model: str, paths, labels) -> dict:
    import numpy as np

    import kcaptcha
    from kcaptcha import decoding
    from kcaptcha.vocab import Vocab

    recognizer = kcaptcha.load_model(model, backend="keras")
    logits = np.concatenate([recognizer.logits(np.stack([recognizer.preprocess(p) for p in paths[i:i + 256]]))
                             for i in range(0, len(paths), 256)])
    vocab = recognizer.vocab
    greedy = decoding.decode(logits, "ctc", Vocab(vocab.charset, 0, logits.shape[1]))
    now = decoding.decode(logits, "ctc", vocab)
    changed = [i for i, (g, n) in enumerate(zip(greedy, now)) if g.text != n.text]
    fixed = [i for i in changed if now[i].text == labels[i]]
    still_wrong = [i for i in changed if now[i].text != labels[i]]
    return {"model": model, "images": len(paths),
            "greedy_misread": sum(g.text != t for g, t in zip(greedy, labels)),
            "misread": sum(n.text != t for n, t in zip(now, labels)),
            "read_again": len(changed), "made_right": len(fixed),
            "confidence_made_right": [round(now[i].confidence, 3) for i in fixed],
            "confidence_still_wrong": [round(now[i].confidence, 3) for i in still_wrong],
            "examples": [f"{labels[i]}: {greedy[i].text} -> {now[i].text}" for i in changed[:12]]}


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from kcaptcha.files import LabelRule, list_images

    reports = []
    if FLAGS.model:
        if not FLAGS.test_dir:
            raise app.UsageError("--model needs --test_dir")
        rule = LabelRule.parse(FLAGS.label_from)
        paths = list_images(FLAGS.test_dir)
        reports.append(compare(FLAGS.model, paths, [rule.label(p) for p in paths]))
    if FLAGS.results:
        for run in read_results(FLAGS.results):
            folder = os.path.join(FLAGS.runs_dir, f"{run['set']}_{run['split']}_{run['size']}_{run['mode']}", "model")
            if run["mode"] == "ddddocr" or not os.path.isdir(folder):
                continue
            set_paths, set_labels = labelled(os.path.join(FLAGS.data_dir, SETS[run["set"]]))
            by_name = {os.path.basename(p): (p, label) for p, label in zip(set_paths, set_labels)}
            paths, labels = zip(*(by_name[name] for name in run["test"]))
            reports.append(compare(folder, list(paths), list(labels)))
    if not reports:
        raise app.UsageError("nothing to read: give --model and --test_dir, or --results with kept runs")
    for report in reports:
        print(f"{report['model']}: {report['images']} images, misread {report['greedy_misread']} greedily, "
              f"{report['misread']} now; {report['read_again']} read again, {report['made_right']} of them made right")
        print(f"    confidence of those made right: {report['confidence_made_right']}; "
              f"of those still wrong: {report['confidence_still_wrong']}")
        for example in report["examples"]:
            print(f"    {example}")
    print(f"all: misread {sum(r['greedy_misread'] for r in reports)} greedily, {sum(r['misread'] for r in reports)} "
          f"now, of {sum(r['images'] for r in reports)}")


if __name__ == "__main__":
    app.run(main)
