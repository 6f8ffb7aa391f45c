"""Wall time from `bin/train` starting until validation accuracy reaches a target, per architecture.

    python benchmarks/time_to_accuracy.py                        # digits: ctc and heads to 99%
    python benchmarks/time_to_accuracy.py --task=alnum --target=1.0 --minutes=20   # equal wall time
    python benchmarks/time_to_accuracy.py --task=digits_3to6 --architectures=ctc --target=1.0 --minutes=15
    python benchmarks/time_to_accuracy.py --task=alnum --architectures=ctc,ctc+1=ctc \
        --architecture_flags="ctc+1 --extra_blocks=1"            # two variants of one architecture

Each architecture is trained by the real command, one after the other in this process's run:
`bin/train --flagfile=experiments/<task>.flags --architecture=<a> ...`, with `heads` given the settings it
shipped with (the baseline). The clock starts when the command starts (imports, filling the captcha
pool and the first validation included) and stops at the first validation whose whole-image accuracy
reaches `--target`, on 2000 captchas of a seed training never draws from. Every run then reads another
2000 held-out captchas (`--heldout_seed`), with accuracy per label length when lengths vary. Prints a
table and draws the curves (`--plot`).
"""

import csv
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app, flags  # noqa: E402

flags.DEFINE_string("task", "digits", "experiments/<task>.flags: digits, alnum or digits_3to6.")
flags.DEFINE_list("architectures", ["ctc", "heads"], "Architectures to train, in order. LABEL=ARCHITECTURE names a "
                  "variant, so that one architecture can run several times with other --architecture_flags.")
flags.DEFINE_float("target", 0.99, "Validation whole-image accuracy that stops the clock (1.0: never).")
flags.DEFINE_float("minutes", 45.0, "Most minutes of training per architecture.")
flags.DEFINE_integer("heldout_size", 2000, "Held-out captchas read by each trained model.")
flags.DEFINE_integer("heldout_seed", 20261201, "Seed of the held-out captchas (never used in training).")
flags.DEFINE_multi_string("architecture_flags", [], "'LABEL --flag=value ...': more bin/train flags for one "
                          "entry of --architectures (its label, or its architecture when unlabelled), after the "
                          "baseline's (repeatable).")
flags.DEFINE_string("plot", None, "Draw validation accuracy against wall time into this PNG.")
flags.DEFINE_string("output_json", None, "Also write the results here.")
FLAGS = flags.FLAGS

# The baseline: the settings the first version's heads model shipped with (experiments/digits.flags then).
BASELINE = {"heads": ["--conv_filters=24,48,96,128", "--batch_size=128", "--max_steps=12000", "--ema_momentum=0",
                      "--eval_every_steps=500"]}


def entries(values: list) -> list:
    """--architectures as (label, architecture) pairs; LABEL=ARCHITECTURE or a bare architecture."""
    pairs = [tuple(value.split("=", 1)) if "=" in value else (value, value) for value in values]
    labels = [label for label, _ in pairs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"Each run needs its own label: name variants LABEL=ARCHITECTURE. Received the labels "
                         f"{', '.join(repeated)} more than once")
    return pairs


def train(label: str, architecture: str, folder: str) -> dict:
    run_dir, model_dir = os.path.join(folder, label), os.path.join(folder, f"{label}_model")
    command = [sys.executable, os.path.join(REPO, "bin", "train"), f"--flagfile=experiments/{FLAGS.task}.flags",
               f"--architecture={architecture}", f"--name=tta_{label}", f"--model_dir={run_dir}",
               f"--save_dir={model_dir}", f"--target_accuracy={FLAGS.target}",
               f"--max_train_seconds={int(FLAGS.minutes * 60)}", "--patience=1000", "--noexport",
               *BASELINE.get(architecture, []), *_more_flags(label)]
    started = time.time()
    with open(os.path.join(folder, f"{label}.log"), "w") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        reached = None
        while process.poll() is None:
            time.sleep(2)
            if reached is None and _best(run_dir) >= FLAGS.target:
                reached = time.time() - started
        if reached is None and _best(run_dir) >= FLAGS.target:
            reached = time.time() - started
    if process.returncode:
        raise RuntimeError(f"{label} failed; see {log.name}")
    return {"label": label, "architecture": architecture, "seconds_to_target": reached, "command_seconds": time.time() - started,
            "history": _history(run_dir), "model": model_dir}


def _more_flags(label: str) -> list:
    return [flag for entry in FLAGS.architecture_flags if entry.split()[0] == label
            for flag in entry.split()[1:]]


def _history(run_dir: str) -> list:
    path = os.path.join(run_dir, "history.csv")
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", "NA")} for row in csv.DictReader(f)]


def _best(run_dir: str) -> float:
    return max((row.get("val_image_accuracy", 0.0) for row in _history(run_dir)), default=0.0)


def heldout(result: dict, images, labels) -> None:
    import kcaptcha
    from kcaptcha.reading import metrics

    recognizer = kcaptcha.load_model(result["model"], backend="keras")
    result["parameters"] = recognizer.model.count_params()
    texts = [p.text for p in recognizer.predict_batch(images)]
    result.update({f"heldout_{k}": v for k, v in metrics.scores(labels, texts).items()})
    if len({len(label) for label in labels}) > 1:
        result["heldout_by_length"] = metrics.accuracy_by_length(labels, texts)


def plot(results: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5))
    for result in results:
        rows = result["history"]
        axis.plot([r["wall_seconds"] / 60 for r in rows], [r["val_image_accuracy"] for r in rows], "o-",
                  markersize=3, label=f"{result['label']} ({result['parameters']:,} parameters)")
    axis.axhline(FLAGS.target if FLAGS.target < 1 else 0.99, color="gray", linestyle=":", linewidth=1)
    axis.set_xlabel("minutes of training (2 CPU cores)")
    axis.set_ylabel("validation whole-image accuracy")
    axis.set_ylim(0, 1.005)
    axis.set_title(f"{FLAGS.task}: time to accuracy")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from kcaptcha.data import pipeline as data
    from kcaptcha.flags import parse_flagfile

    cwd = os.getcwd()
    os.chdir(REPO)
    config = parse_flagfile(f"experiments/{FLAGS.task}.flags")
    os.chdir(cwd)
    runs = entries(FLAGS.architectures)
    test = data.synthetic_set(config, FLAGS.heldout_size, FLAGS.heldout_seed)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for label, architecture in runs:
            result = train(label, architecture, folder)
            heldout(result, test.images, test.labels)
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k not in ("history", "model")}), flush=True)
    print(f"\n{FLAGS.task}, target {FLAGS.target}, at most {FLAGS.minutes} min each, {os.cpu_count()} CPUs")
    print(f"{'run':12} {'parameters':>10} {'steps':>6} {'to target':>10} {'best val':>9} "
          f"{'held-out':>9} {'char':>7}")
    for r in results:
        to_target = f"{r['seconds_to_target'] / 60:.1f} min" if r["seconds_to_target"] else "not reached"
        best = max((row["val_image_accuracy"] for row in r["history"]), default=0.0)
        steps = int(r["history"][-1]["step"]) if r["history"] else 0
        print(f"{r['label']:12} {r['parameters']:>10,} {steps:>6} {to_target:>10} {best:>9.4f} "
              f"{r['heldout_image_accuracy']:>9.4f} {r['heldout_character_accuracy']:>7.4f}")
        for length, entry in sorted(r.get("heldout_by_length", {}).items()):
            print(f"    length {length}: {entry}")
    if FLAGS.plot:
        plot(results, FLAGS.plot)
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump({"task": FLAGS.task, "target": FLAGS.target, "minutes": FLAGS.minutes,
                       "results": [{k: v for k, v in r.items() if k != "model"} for r in results]}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
