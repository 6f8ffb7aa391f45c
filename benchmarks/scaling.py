"""Step time, images/s and accuracy of `bin/train` under each strategy, mixed precision and XLA.

    python benchmarks/scaling.py                       # digits, 300 steps per configuration
    python benchmarks/scaling.py --steps=600 --only=one_worker,two_workers

Every configuration trains the same task for the same number of optimizer steps with the same global
batch (`--flagfile=experiments/digits.flags --max_steps=--steps`), one after the other on this machine:
    one_worker    --strategy=auto (one device, Keras' default, no tf.distribute)
    one_device    --strategy=one_device (tf.distribute.OneDeviceStrategy)
    two_workers   --strategy=multi_worker: two processes on 127.0.0.1 (TF_CONFIG), sharing the same cores
    bfloat16      --mixed_precision=mixed_bfloat16
    xla           --jit_compile
Step time is the steady rate between the first and the last validation (so imports, filling the captcha
pool and tracing are left out; the small validations of --val_size=200 are in), read from the chief's
history.csv. Accuracy is the saved model's whole-image accuracy on 2000 held-out captchas of a seed
training never draws from. Prints a Markdown table and writes the rows as JSON (--output_json).
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

from tests.ports import free_local_ports  # noqa: E402

flags.DEFINE_integer("steps", 300, "Optimizer steps per configuration.")
flags.DEFINE_integer("eval_every", 50, "Validate (and time) every this many steps.")
flags.DEFINE_list("only", [], "Run only these configurations (default: all).")
flags.DEFINE_integer("heldout_size", 2000, "Held-out captchas read by each trained model.")
flags.DEFINE_integer("heldout_seed", 20261201, "Seed of the held-out captchas (never used in training).")
flags.DEFINE_string("output_json", None, "Also write the rows here.")
FLAGS = flags.FLAGS

CONFIGURATIONS = {
    "one_worker": (1, ["--strategy=auto"]),
    "one_device": (1, ["--strategy=one_device"]),
    "two_workers": (2, ["--strategy=multi_worker"]),
    "bfloat16": (1, ["--mixed_precision=mixed_bfloat16"]),
    "xla": (1, ["--jit_compile"]),
}


def command(folder, extra):
    return [sys.executable, os.path.join(REPO, "bin", "train"), "--flagfile=experiments/digits.flags",
            f"--max_steps={FLAGS.steps}", f"--eval_every_steps={FLAGS.eval_every}", "--val_size=200",
            "--target_accuracy=1.0", f"--patience={FLAGS.steps}", f"--checkpoint_every_steps={FLAGS.steps}",
            f"--model_dir={folder}/run", f"--save_dir={folder}/model", "--noexport", *extra]


def train(folder, workers, extra):
    """Runs the configuration (one process per worker); returns the chief's summary and the wall seconds."""
    ports = free_local_ports(workers)
    processes, started = [], time.monotonic()
    for index in range(workers):
        env = dict(os.environ)
        if workers > 1:
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                           "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(command(folder, extra), cwd=REPO, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, text=True))
    outputs = [process.communicate()[0] for process in processes]
    if any(process.returncode for process in processes):
        raise RuntimeError(f"training failed: {outputs[0][-2000:]}")
    text = "\n" + outputs[0]  # a summary as JSON, after any "Resuming ..." line
    return json.loads(text[text.rindex("\n{") + 1:]), time.monotonic() - started


def steady_rate(run_dir):
    """(seconds per step, steps) between the first and the last validation of history.csv."""
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        rows = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]
    first, last = rows[0], rows[-1]
    return (last["wall_seconds"] - first["wall_seconds"]) / (last["step"] - first["step"]), last["step"]


def heldout_accuracy(model_dir, heldout):
    import kcaptcha
    from kcaptcha.reading import metrics

    readings = [p.text for p in kcaptcha.load_model(model_dir).predict(list(heldout.images))]
    return metrics.image_accuracy(heldout.labels, readings)


def main(argv):
    del argv
    from kcaptcha.data import pipeline as data
    from kcaptcha.flags import parse_flagfile

    os.chdir(REPO)
    config = parse_flagfile("experiments/digits.flags")
    heldout = data.synthetic_set(config, FLAGS.heldout_size, FLAGS.heldout_seed)
    rows = []
    for name, (workers, extra) in CONFIGURATIONS.items():
        if FLAGS.only and name not in FLAGS.only:
            continue
        with tempfile.TemporaryDirectory(prefix=f"scaling-{name}-") as folder:
            summary, wall = train(folder, workers, extra)
            seconds, steps = steady_rate(os.path.join(folder, "run"))
            row = {"configuration": name, "flags": " ".join(extra), "workers": workers, "steps": int(steps),
                   "ms_per_step": round(1000 * seconds, 1),
                   "images_per_second": round(config.batch_size / seconds, 1),
                   "heldout_image_accuracy": round(heldout_accuracy(os.path.join(folder, "model"), heldout), 4),
                   "command_seconds": round(wall, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = next((row for row in rows if row["configuration"] == "one_worker"), rows[0])
    print(f"\n{FLAGS.steps} steps of experiments/digits.flags (global batch {config.batch_size}), "
          f"held-out accuracy on {FLAGS.heldout_size} captchas\n")
    print("| configuration | flags | ms/step | images/s | vs one_worker | held-out image accuracy | command s |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['configuration']} | `{row['flags']}` | {row['ms_per_step']} | {row['images_per_second']} | "
              f"{row['ms_per_step'] / base['ms_per_step']:.2f}× | {100 * row['heldout_image_accuracy']:.1f}% | "
              f"{row['command_seconds']} |")
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    app.run(main)
