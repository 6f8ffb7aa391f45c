"""Learning curves on real captchas: whole-image accuracy against the number of labelled images.

    python benchmarks/real_data.py                                  # both sets, every size, scratch and alnum
    python benchmarks/real_data.py --sets=v2 --sizes=200 --folds=5 --modes=init

- captcha_images_v2 (1040 images): 5-fold; each fold's images are read by models that never saw them,
  trained on `size` images drawn from the other folds ("all": every one of them).
- amazon_6letter (4040 images): a fixed test split of 1000; models train on `size` of the other 3040.
Each run is the real command, `bin/train --train_dir=<those images> --label_from=stem [--init_from=alnum]`
(its folder defaults: charset, lengths and size from the images; 10% held out for validation), capped
at `--max_minutes`. Beside them, in the same run, ddddocr (a general pretrained reader, `pip install
'kcaptcha[bench]'`) reads the same test images with no training, compared case-insensitively. Results
are appended to `--results` as they come, so an interrupted run continues where it stopped.
"""

import collections
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app, flags  # noqa: E402

from real_sets import SETS, labelled, read_results  # noqa: E402
from sheets import contact_sheet  # noqa: E402

flags.DEFINE_string("data_dir", os.path.join(os.path.dirname(REPO), "shared", "data"), "Where the sets are.")
flags.DEFINE_list("sets", ["v2", "amazon"], f"Which sets: {', '.join(SETS)}.")
flags.DEFINE_list("sizes", ["100", "250", "500", "1000", "all"], "Labelled training images per run.")
flags.DEFINE_list("modes", ["scratch", "init"], "scratch, and/or init (bin/train --init_from=--init_from).")
flags.DEFINE_string("init_from", "alnum", "The model fine-tuned in mode init.")
flags.DEFINE_integer("folds", 5, "captcha_images_v2 folds (every image is read once by a model that never saw it).")
flags.DEFINE_integer("amazon_test", 1000, "amazon_6letter test images.")
flags.DEFINE_float("max_minutes", 10.0, "Most minutes of training per run.")
flags.DEFINE_string("results", "benchmarks/results/real_data.jsonl", "Runs done so far (one JSON per line).")
flags.DEFINE_list("splits", [], "Only these splits (e.g. fold0 for one v2 fold, when time is short); all by default.")
flags.DEFINE_list("train_flags", [], "More bin/train flags for every run, e.g. --train_flags=--max_steps=2000.")
flags.DEFINE_string("errors_png", None, "Draw the misread test images of each set's best run (of --sizes and "
                    "--modes) into this PNG (one file per set: <name>.<set>.png).")
flags.DEFINE_bool("ddddocr", True, "Also read the test images with ddddocr, if installed.")
flags.DEFINE_integer("seed", 0, "Seed of the folds, the test split and the training subsets.")
flags.DEFINE_string("runs_dir", None, "Keep each run's folder (history.csv, checkpoints, model) under this folder, "
                    "as <set>_<split>_<size>_<mode>; an interrupted run resumes there. By default they are temporary.")
FLAGS = flags.FLAGS


def splits(name: str, paths):
    """[(split name, test indices, the indices training may draw from)] for a set."""
    order = np.random.default_rng(FLAGS.seed).permutation(len(paths))
    if name == "v2":
        folds = np.array_split(order, FLAGS.folds)
        return [(f"fold{k}", fold, np.concatenate([f for j, f in enumerate(folds) if j != k]))
                for k, fold in enumerate(folds)]
    return [("test", order[:FLAGS.amazon_test], order[FLAGS.amazon_test:])]


def run(name, split, size, mode, paths, test, pool, folder) -> dict:
    count = len(pool) if size == "all" else min(int(size), len(pool))
    chosen = np.random.default_rng(FLAGS.seed + 1).permutation(pool)[:count]
    train_dir = os.path.join(folder, "train")
    os.makedirs(train_dir, exist_ok=True)
    for index in chosen:
        link = os.path.join(train_dir, os.path.basename(paths[index]))
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(paths[index]), link)
    command = [sys.executable, os.path.join(REPO, "bin", "train"), f"--train_dir={train_dir}", "--label_from=stem",
               f"--model_dir={folder}/run", f"--save_dir={folder}/model", "--noexport", f"--name=real_{name}",
               f"--max_train_seconds={int(FLAGS.max_minutes * 60)}"]
    if mode == "init":
        command.append(f"--init_from={FLAGS.init_from}")
    command += FLAGS.train_flags
    started = time.time()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.time() - started
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    import kcaptcha

    recognizer = kcaptcha.load_model(f"{folder}/model", backend="keras")
    readings = [p.text for p in recognizer.predict([paths[i] for i in test])]
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    return {"set": name, "split": split, "size": size, "labelled": count, "mode": mode,
            "test": [os.path.basename(paths[i]) for i in test], "readings": readings,
            "command_seconds": round(seconds, 1), "train_seconds": summary.get("wall_seconds"),
            "steps": summary.get("steps"), "stop_reason": summary.get("stop_reason")}


def ddddocr_readings(paths, test):
    try:
        import ddddocr
    except ImportError:
        return None
    reader = ddddocr.DdddOcr(show_ad=False)
    readings = []
    for index in test:
        with open(paths[index], "rb") as f:
            readings.append(reader.classification(f.read()))
    return readings


def table(results, labels_of) -> str:
    from kcaptcha.reading import metrics

    groups = collections.defaultdict(lambda: {"truths": [], "readings": [], "seconds": []})
    for r in results:
        group = groups[(r["set"], r["size"], r["mode"])]
        group["truths"] += [labels_of[r["set"]][name] for name in r["test"]]
        group["readings"] += r["readings"]
        group["seconds"].append(r.get("train_seconds") or 0)
        group["labelled"] = r["labelled"]
    lines = [f"{'set':7} {'labelled':>8} {'mode':8} {'images read':>11} {'whole-image':>11} {'character':>9} "
             f"{'train min':>9}"]
    for (name, size, mode), g in sorted(groups.items(), key=lambda kv: (kv[0][0], _order(kv[0][1]), kv[0][2])):
        truths, readings = g["truths"], g["readings"]
        if mode == "ddddocr":
            truths, readings = [t.lower() for t in truths], [r.lower() for r in readings]
        scores = metrics.scores(truths, readings)
        lines.append(f"{name:7} {g.get('labelled', 0):>8} {mode:8} {len(truths):>11} "
                     f"{scores['image_accuracy']:>11.4f} {scores['character_accuracy']:>9.4f} "
                     f"{np.mean(g['seconds']) / 60:>9.1f}")
    return "\n".join(lines)


def draw_errors(results, labels_of, paths_of, output: str) -> None:
    """Each set's misread images from its most accurate trained group, captioned `true -> read`."""
    for name in {r["set"] for r in results}:
        groups = collections.defaultdict(list)
        for r in results:
            if r["set"] == name and r["mode"] != "ddddocr":
                groups[(r["size"], r["mode"])].append(r)
        if not groups:
            continue

        def correct(runs):
            return sum(labels_of[name][t] == p for r in runs for t, p in zip(r["test"], r["readings"]))

        (size, mode), runs = max(groups.items(), key=lambda kv: correct(kv[1]) / sum(len(r["test"]) for r in kv[1]))
        wrong = [(t, p) for r in runs for t, p in zip(r["test"], r["readings"]) if labels_of[name][t] != p]
        if not wrong:
            continue
        cells = [(paths_of[name][test], f"{labels_of[name][test]} -> {read or '(nothing)'}") for test, read in wrong]
        sheet = contact_sheet(cells, (210, 64), title=f"{name}: misread by the best run ({size} labelled, {mode})",
                              keep_aspect=True)
        root, ext = os.path.splitext(output)
        sheet.save(f"{root}.{name}{ext or '.png'}")
        print(f"wrote {root}.{name}{ext or '.png'}: {len(wrong)} misread")


def _order(size):
    return 10**9 if size == "all" else int(size)


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    done = read_results(FLAGS.results)
    keys = {(r["set"], r["split"], r["size"], r["mode"]) for r in done}
    labels_of, paths_of = {}, {}
    for name in FLAGS.sets:
        paths, labels = labelled(os.path.join(FLAGS.data_dir, SETS[name]))
        labels_of[name] = {os.path.basename(p): label for p, label in zip(paths, labels)}
        paths_of[name] = {os.path.basename(p): p for p in paths}
        for split, test, pool in splits(name, paths):
            if FLAGS.splits and split not in FLAGS.splits:
                continue
            jobs = [(size, mode) for size in FLAGS.sizes for mode in FLAGS.modes]
            if FLAGS.ddddocr:
                jobs.append(("0", "ddddocr"))
            for size, mode in jobs:
                if (name, split, size, mode) in keys:
                    continue
                if mode == "ddddocr":
                    readings = ddddocr_readings(paths, test)
                    if readings is None:
                        continue
                    result = {"set": name, "split": split, "size": size, "labelled": 0, "mode": mode,
                              "test": [os.path.basename(paths[i]) for i in test], "readings": readings}
                elif FLAGS.runs_dir:
                    folder = os.path.join(FLAGS.runs_dir, f"{name}_{split}_{size}_{mode}")
                    result = run(name, split, size, mode, paths, test, pool, folder)
                else:
                    with tempfile.TemporaryDirectory() as folder:
                        result = run(name, split, size, mode, paths, test, pool, folder)
                with open(FLAGS.results, "a") as f:
                    f.write(json.dumps(result) + "\n")
                done.append(result)
                print(f"{name} {split} {size} {mode}: {np.mean([a == b for a, b in zip(result['readings'], [labels_of[name][n] for n in result['test']])]):.4f}"
                      f" ({result.get('train_seconds')} s)", flush=True)
    print(table([r for r in done if r["set"] in FLAGS.sets], labels_of))
    if FLAGS.errors_png:
        asked = [r for r in done if r["set"] in FLAGS.sets and r["mode"] in FLAGS.modes and r["size"] in FLAGS.sizes]
        draw_errors(asked, labels_of, paths_of, FLAGS.errors_png)


if __name__ == "__main__":
    app.run(main)
