"""The data flywheel, simulated with the true labels as the reviewer: which images should a person label?

    python benchmarks/flywheel.py --sets=amazon,v2 --rounds=4 --budget=50 --steps=300

Start from `--start` labelled images; every round the current model reads a pool of unlabelled images,
`--budget` of them are "reviewed" (given their true label), the model is trained again from the last one
(`bin/train --init_from=<last model>`), and it reads a fixed test split. Two strategies side by side:
`uncertain` reviews the readings with the lowest confidence, `random` a random sample. Results are
appended to `--results` as they come (an interrupted run continues).
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app, flags  # noqa: E402

from real_sets import SETS, labelled, read_results  # noqa: E402

flags.DEFINE_string("data_dir", os.path.join(os.path.dirname(REPO), "shared", "data"), "Where the sets are.")
flags.DEFINE_list("sets", ["amazon", "v2"], f"Which sets: {', '.join(SETS)}.")
flags.DEFINE_list("strategies", ["uncertain", "random"], "Which images a round reviews.")
flags.DEFINE_integer("start", 100, "Labelled images before the first round.")
flags.DEFINE_integer("budget", 50, "Images reviewed per round.")
flags.DEFINE_integer("rounds", 4, "Rounds of review and retraining.")
flags.DEFINE_integer("test", 300, "Test images (never labelled, never in the pool).")
flags.DEFINE_string("init_from", "alnum", "The model the first round fine-tunes.")
flags.DEFINE_integer("steps", 300, "Training steps per round (the same for every strategy, so rounds compare).")
flags.DEFINE_float("max_minutes", 10.0, "Most minutes of training per round (a safety cap).")
flags.DEFINE_string("results", "benchmarks/results/flywheel.jsonl", "Rounds done so far (one JSON per line).")
flags.DEFINE_integer("seed", 0, "Seed of the test split, the start set and random reviews.")
FLAGS = flags.FLAGS


def train_round(paths, labels, chosen, init_from, folder) -> str:
    """Trains on the chosen images (a labels.csv of reviewed rows) starting from `init_from`; the new model."""
    from kcaptcha.data import labels as labels_csv

    train_dir = os.path.join(folder, "reviewed")
    os.makedirs(train_dir)
    rows = []
    for index in chosen:
        name = os.path.basename(paths[index])
        os.symlink(os.path.abspath(paths[index]), os.path.join(train_dir, name))
        rows.append(labels_csv.Row(name, labels[index], None, "corrected"))
    labels_csv.write(os.path.join(train_dir, labels_csv.FILE), rows)
    model_dir = os.path.join(folder, "model")
    command = [sys.executable, os.path.join(REPO, "bin", "train"), f"--train_dir={train_dir}",
               f"--init_from={init_from}", f"--model_dir={folder}/run", f"--save_dir={model_dir}", "--noexport",
               f"--max_steps={FLAGS.steps}", f"--min_steps={FLAGS.steps}",
               f"--max_train_seconds={int(FLAGS.max_minutes * 60)}", "--name=flywheel"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return model_dir


def read(model_dir, paths, indices):
    import kcaptcha

    return kcaptcha.load_model(model_dir, backend="keras").predict([paths[i] for i in indices])


def simulate(name, strategy, paths, labels, keep, first_rounds):
    """Yields one result per round; the model of each round is kept in `keep` for the next.

    Round 0 (the start set, before any review) is the same for every strategy: it is trained once per set
    and kept in `first_rounds`."""
    rng = np.random.default_rng(FLAGS.seed)
    order = rng.permutation(len(paths))
    test, chosen, pool = order[:FLAGS.test], list(order[FLAGS.test:FLAGS.test + FLAGS.start]), \
        list(order[FLAGS.test + FLAGS.start:])
    init_from = FLAGS.init_from
    for round_number in range(FLAGS.rounds + 1):
        if round_number == 0 and name in first_rounds:
            model_dir, accuracy = first_rounds[name]
        else:
            model_dir = train_round(paths, labels, chosen, init_from, tempfile.mkdtemp(dir=keep))
            readings = read(model_dir, paths, test)
            accuracy = float(np.mean([p.text == labels[i] for p, i in zip(readings, test)]))
            first_rounds.setdefault(name, (model_dir, accuracy))
        yield {"set": name, "strategy": strategy, "round": round_number, "labels": len(chosen),
               "test_accuracy": accuracy}
        if round_number == FLAGS.rounds:
            return
        if strategy == "uncertain":
            confidences = [p.confidence for p in read(model_dir, paths, pool)]
            picked = [pool[i] for i in np.argsort(confidences)[:FLAGS.budget]]
        else:
            picked = list(rng.choice(pool, FLAGS.budget, replace=False))
        chosen += picked
        pool = [i for i in pool if i not in set(picked)]
        init_from = model_dir


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    done = read_results(FLAGS.results)
    finished = {(r["set"], r["strategy"]) for r in done if r["round"] == FLAGS.rounds}
    first_rounds = {}
    with tempfile.TemporaryDirectory() as keep:
        for name in FLAGS.sets:
            paths, labels = labelled(os.path.join(FLAGS.data_dir, SETS[name]))
            for strategy in FLAGS.strategies:
                if (name, strategy) in finished:
                    continue
                done = [r for r in done if (r["set"], r["strategy"]) != (name, strategy)]  # rerun it whole
                for result in simulate(name, strategy, paths, labels, keep, first_rounds):
                    done.append(result)
                    print(json.dumps(result), flush=True)
                with open(FLAGS.results, "a") as f:
                    for result in done:
                        if (result["set"], result["strategy"]) == (name, strategy):
                            f.write(json.dumps(result) + "\n")
    print(f"\n{'set':7} {'round':>5} {'labels':>6} " + " ".join(f"{s:>10}" for s in FLAGS.strategies))
    for name in FLAGS.sets:
        for round_number in range(FLAGS.rounds + 1):
            row = {r["strategy"]: r for r in done if r["set"] == name and r["round"] == round_number}
            if row:
                labels_spent = next(iter(row.values()))["labels"]
                print(f"{name:7} {round_number:>5} {labels_spent:>6} " + " ".join(
                    f"{row[s]['test_accuracy']:>10.4f}" if s in row else f"{'':>10}" for s in FLAGS.strategies))


if __name__ == "__main__":
    app.run(main)
