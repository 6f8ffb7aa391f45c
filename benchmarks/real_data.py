"""The six-site benchmark: each recipe on every shared real set, scored on one fixed test split per set.

    nohup nice -n 5 python benchmarks/real_data.py --errors_png=benchmarks/results/real_sites_errors.png \
        > benchmarks/results/real_sites.log 2>&1 &             # every row, hours of CPU; rerun to resume
    python benchmarks/real_data.py --rows=general@0,ddddocr@0  # the rows without training, minutes

Run from the repository root. The sets and their test splits are `benchmarks/real_sets.py`'s: a set's paths
sorted, permuted with seed 0, the first min(500, 25%) are its test images, the rest its training split.
Rows (`--rows`), each on every set (`--sets`):
- `default@N` (N = 50, 100, 200, all): `bin/train` with every default on N labelled training-split images
  (drawn with `--seed`: the same N for every row at that N, the 50 among the 100 among the 200;
  bin/train holds 10% of them out to validate);
- `scratch@200`, `alnum@200`: the same 200 images, with `--init_from=none` / `--init_from=alnum`;
  `basesize@200`: at `general`'s own input size (160×60), so that every layer of the base fits (the default
  since 2026-12-07); `twinbase@200`: starting from general's twin (`--twin_model`), on the sets it never saw:
  what 200 labels give on a site the base model has never seen;
- `unlabelled@50`, `unlabelled@200`: the 50 or 200 images, and the rest of the training split, unlabelled, as `--unlabelled_dir`
  (each self-training round's model is scored too: `round_accuracy`, round 0 trained on the 50 alone);
  `twinunlabelled@50`, `twinunlabelled@200`: from general's twin, on the sets it never saw;
- `general@0`: the `general` model, no training; `twin@0`: a twin of it trained without some of the sets
  (`--twin_model`: `general_twin` leaves out v2 and mnwato, `general_twin2` swust19, swust20 and hfut), the
  honest zero-shot figure on those; `ddddocr@0`: ddddocr
  (`pip install 'kcaptcha[bench]'`).
Training files are linked as `<lowercased label>_<n>.<ext>`; images that do not decode are left out (counted).
Readings are compared case-insensitively (the six sites read case-blind). Each training is capped at
`--max_minutes` and runs in a subprocess in `--runs_dir/<set>/<row>`, so an interrupted one resumes there
(a row whose model is saved there is read again, e.g. with `--tta`, never trained further);
each (set, row) is appended to `--results` when done and not run again. A row that cannot run yet (a flag
bin/train lacks, no `general` model) is recorded as skipped with the reason and tried again next time.
It prints one Markdown table: per row, each set's whole-image accuracy, their mean and the worst set, the mean
character accuracy, training minutes and ms per image read; `--errors_png` draws each row's misreads on its
worst set.
"""

import csv
import dataclasses
import itertools
import json
import os
import subprocess
import sys
import time
from typing import Optional, Tuple

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app, flags  # noqa: E402

from real_sets import DEFAULT_DATA, SETS, labelled, read_results, readable, test_split  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Row:
    """One recipe: `size` labelled images (None: the whole training split; 0: no training), extra bin/train
    flags, and whether the rest of the training split is given unlabelled."""

    size: Optional[int]
    train_flags: Tuple[str, ...] = ()
    unlabelled: bool = False


ROWS = {
    "default@50": Row(50), "default@100": Row(100), "default@200": Row(200), "default@all": Row(None),
    "scratch@200": Row(200, ("--init_from=none",)), "alnum@200": Row(200, ("--init_from=alnum",)),
    "basesize@200": Row(200, ("--width=160", "--height=60")),  # at general's own input size: every layer fits
    "twinbase@200": Row(200, ("--init_from={twin_model}",)),  # from general's twin: a site its base never saw
    "unlabelled@50": Row(50, unlabelled=True), "unlabelled@200": Row(200, unlabelled=True),
    "twinunlabelled@50": Row(50, ("--init_from={twin_model}",), unlabelled=True),  # self-training on a new site
    "twinunlabelled@200": Row(200, ("--init_from={twin_model}",), unlabelled=True),
    "general@0": Row(0), "twin@0": Row(0), "ddddocr@0": Row(0),
}

flags.DEFINE_string("data_dir", DEFAULT_DATA, "Where the six sets are.")
flags.DEFINE_integer("tta", 0, "Read in this many warped copies where unsure (bin/evaluate's --tta); the rows are "
                     "then recorded as <row>+tta<N>, beside the rows read without.", lower_bound=0)
flags.DEFINE_string("twin_model", "saved_models/general_twin", "The row twin@0's model: general's twin, trained the "
                    "same way without some of the sets (experiments/general.flags), read on the sets it never saw.")
flags.DEFINE_list("sets", list(SETS), f"Which sets: {', '.join(SETS)}.")
flags.DEFINE_list("rows", list(ROWS), f"Which rows: {', '.join(ROWS)}.")
flags.DEFINE_string("runs_dir", os.path.join(REPO, "runs", "real_sites"), "Run folders, <set>/<row>.")
flags.DEFINE_string("results", os.path.join(REPO, "benchmarks", "results", "real_sites.jsonl"),
                    "Rows done so far, one JSON per (set, row).")
flags.DEFINE_float("max_minutes", 20.0, "Most minutes of training per run.")
flags.DEFINE_integer("seed", 0, "Seed that draws the labelled training images (the test split stays fixed).")
flags.DEFINE_string("label_errors", os.path.join(REPO, "benchmarks", "label_errors.csv"),
                    "Test images whose file name's label is plainly wrong, with what the image shows: the table "
                    "is printed a second time scored against those corrections.")
flags.DEFINE_string("errors_png", None, "Draw each row's misread test images of its worst set into "
                    "<root>.<row>.png.")
FLAGS = flags.FLAGS


class Skipped(Exception):
    """A row that cannot run yet; the message says why."""


def training_folders(folder: str, paths, labels, pool, row: Row) -> dict:
    """Links the row's labelled images into `folder/train` (and the rest into `folder/unlabelled`)."""
    order = np.random.default_rng(FLAGS.seed).permutation(pool)
    chosen = order if row.size is None else order[:row.size]
    groups = {"train": [(i, f"{labels[i].lower()}_{i}") for i in chosen]}
    if row.unlabelled:
        groups["unlabelled"] = [(i, f"{i:05d}") for i in order[len(chosen):]]
    for group, names in groups.items():
        os.makedirs(os.path.join(folder, group), exist_ok=True)
        for index, stem in names:
            link = os.path.join(folder, group, stem + os.path.splitext(paths[index])[1].lower())
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(paths[index]), link)
    return {"labelled": len(chosen), "unlabelled": len(groups.get("unlabelled", ()))}


def train(name: str, row_name: str, folder: str) -> dict:
    """Runs bin/train on `folder/train` in a subprocess (resuming `folder/run`); its JSON summary."""
    row = ROWS[row_name]
    summary_path = os.path.join(folder, "run", "summary.json")
    if os.path.exists(os.path.join(folder, "model", "metadata.json")) and os.path.exists(summary_path):
        # Trained already (the row read again, with --tta): read that model as it is, without starting
        # bin/train again only for it to save the same model once more.
        return {**summary_figures(summary_path), "command_seconds": None}
    command = [sys.executable, os.path.join(REPO, "bin", "train"), f"--train_dir={folder}/train",
               f"--name=real_{name}_{row_name.replace('@', '_')}", f"--model_dir={folder}/run",
               f"--save_dir={folder}/model", "--noexport", f"--max_train_seconds={int(FLAGS.max_minutes * 60)}",
               *(flag.format(twin_model=FLAGS.twin_model) for flag in row.train_flags)]
    if row.unlabelled:
        command.append(f"--unlabelled_dir={folder}/unlabelled")
    started = time.time()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode:
        reason = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        raise Skipped(f"bin/train failed: {reason[-300:]}")
    return {**summary_figures(summary_path), "command_seconds": round(time.time() - started, 1)}


def summary_figures(path: str) -> dict:
    """What a row records of bin/train's summary of its run."""
    with open(path) as f:
        summary = json.load(f)
    return {"train_seconds": summary.get("wall_seconds"), "steps": summary.get("steps"),
            "stop_reason": summary.get("stop_reason"), "stop_detail": summary.get("stop_detail")}


def bin_train_knows(flag: str) -> bool:
    result = subprocess.run([sys.executable, os.path.join(REPO, "bin", "train"), "--helpfull"], cwd=REPO,
                            capture_output=True, text=True)
    return f"--{flag}" in result.stdout + result.stderr


def reader(row_name: str, folder: str):
    """A function reading a list of paths into a list of texts."""
    if row_name == "ddddocr@0":
        import ddddocr

        ocr = ddddocr.DdddOcr(show_ad=False)

        def read(paths):
            texts = []
            for path in paths:
                with open(path, "rb") as f:
                    texts.append(ocr.classification(f.read()))
            return texts
        return read
    import kcaptcha

    try:
        model = {"general@0": "general", "twin@0": FLAGS.twin_model}.get(row_name, f"{folder}/model")
        recognizer = kcaptcha.load_model(model, tta=FLAGS.tta)
    except (FileNotFoundError, ValueError) as error:
        raise Skipped(str(error)) from None
    return lambda paths: [p.text for p in recognizer.predict(paths)]


def round_accuracies(folder: str, test_paths, truths) -> list:
    """Whole-image test accuracy of each self-training round's model in `folder/run`, round 0 first."""
    import kcaptcha

    accuracies = []
    for k in itertools.count():
        model = os.path.join(folder, "run", f"round{k}", "model")
        if not os.path.isdir(model):
            return accuracies
        readings = [p.text for p in kcaptcha.load_model(model, tta=FLAGS.tta).predict(test_paths)]
        accuracies.append(round(scores({"truths": truths, "readings": readings})["image_accuracy"], 4))


def run_row(name: str, row_name: str, paths, labels) -> dict:
    """Trains (unless the row needs no training, or is trained already) and reads the set's test split: the
    row's record."""
    test, train_split = test_split(len(paths))
    pool = [i for i in train_split if readable(paths[i])]
    folder = os.path.join(FLAGS.runs_dir, name, row_name)
    record = {"set": name, "row": row_name + (f"+tta{FLAGS.tta}" if FLAGS.tta else ""),
              "date": time.strftime("%Y-%m-%d"), "seed": FLAGS.seed, "unreadable_left_out": len(train_split) - len(pool)}
    if ROWS[row_name].size != 0:
        if ROWS[row_name].unlabelled and not bin_train_knows("unlabelled_dir"):
            raise Skipped("bin/train has no --unlabelled_dir flag yet")
        record.update(training_folders(folder, paths, labels, pool, ROWS[row_name]))
        record.update(train(name, row_name, folder))
    read = reader(row_name, folder)
    test_paths = [paths[i] for i in test]
    read(test_paths[:1])  # warm up (graph tracing, sessions) before timing
    started = time.time()
    readings = read(test_paths)
    record["ms_per_image"] = round(1000 * (time.time() - started) / len(test_paths), 2)
    if ROWS[row_name].unlabelled:  # each self-training round's model on the test split: what the unlabelled add
        record["round_accuracy"] = round_accuracies(folder, test_paths, [labels[i] for i in test])
    record["test"] = [os.path.basename(p) for p in test_paths]
    record["truths"] = [labels[i] for i in test]
    record["readings"] = readings
    record.update(scores(record))
    return record


def scores(record) -> dict:
    from kcaptcha.reading.metrics import scores as score

    return score([t.lower() for t in record["truths"]], [r.lower() for r in record["readings"]])


def read_label_errors(path: Optional[str]) -> dict:
    """{(set, file name): what the image shows} from a CSV of set,file,label,shows; {} without one."""
    if not path or not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        return {(row["set"], row["file"]): row["shows"].lower() for row in csv.DictReader(f)}


def corrected(chosen: dict, label_errors: dict) -> dict:
    """`chosen` with each record scored against the test labels as corrected by `label_errors`."""
    fixed = {}
    for key, record in chosen.items():
        if "skipped" in record or not any((record["set"], n) in label_errors for n in record["test"]):
            fixed[key] = record
            continue
        truths = [label_errors.get((record["set"], n), t) for n, t in zip(record["test"], record["truths"])]
        fixed[key] = {**record, "truths": truths}
        fixed[key].update(scores(fixed[key]))
    return fixed


def latest(records, sets, rows) -> dict:
    """{(set, row): its record}: the latest done one, else the latest skip."""
    chosen = {}
    for r in records:
        key = (r["set"], r["row"])
        if r["set"] in sets and r["row"] in rows and not ("skipped" in r and "skipped" not in chosen.get(key, r)):
            chosen[key] = r
    return chosen


def table(chosen, sets, rows) -> str:
    """The Markdown table: a row per recipe, each set's whole-image accuracy, mean and worst set."""
    head = ["row", *sets, "mean", "worst", "char. mean", "train min", "ms/image"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for row in rows:
        done = {s: chosen[(s, row)] for s in sets if (s, row) in chosen and "skipped" not in chosen[(s, row)]}
        skips = {chosen[(s, row)]["skipped"] for s in sets if "skipped" in chosen.get((s, row), {})}
        notes += [f"- {row} skipped: {reason}" for reason in sorted(skips)]
        cells = [f"{done[s]['image_accuracy']:.3f}" if s in done else
                 ("skipped" if "skipped" in chosen.get((s, row), {}) else "–") for s in sets]
        if done:
            accuracy = {s: r["image_accuracy"] for s, r in done.items()}
            worst = min(accuracy, key=accuracy.get)
            share = "" if len(done) == len(sets) else f" ({len(done)}/{len(sets)} sets)"
            minutes = [(r.get("train_seconds") or 0) / 60 for r in done.values()]
            cells += [f"{np.mean(list(accuracy.values())):.3f}{share}", f"{accuracy[worst]:.3f} ({worst})",
                      f"{np.mean([r['character_accuracy'] for r in done.values()]):.3f}", f"{np.mean(minutes):.1f}" if ROWS[row.split("+")[0]].size != 0 else "–",
                      f"{np.mean([r['ms_per_image'] for r in done.values()]):.1f}"]
        else:
            cells += ["–"] * 5
        lines.append("| " + " | ".join([row, *cells]) + " |")
    return "\n".join(lines + ([""] + notes if notes else []))


def draw_errors(chosen, sets, rows, output: str, most: int = 240) -> None:
    """Each row's misread test images of its worst set, captioned `true -> read`."""
    from sheets import contact_sheet

    for row in rows:
        done = [chosen[(s, row)] for s in sets if "skipped" not in chosen.get((s, row), {"skipped": 1})]
        if not done:
            continue
        worst = min(done, key=lambda r: r["image_accuracy"])
        folder = os.path.join(FLAGS.data_dir, SETS[worst["set"]])
        wrong = [(os.path.join(folder, n), f"{t} -> {r or '(nothing)'}")
                 for n, t, r in zip(worst["test"], worst["truths"], worst["readings"]) if t.lower() != r.lower()]
        if not wrong:
            continue
        shown = "" if len(wrong) <= most else f", the first {most}"
        sheet = contact_sheet(wrong[:most], (180, 56), columns=6, keep_aspect=True,
                              title=f"{row} on {worst['set']} (its worst set): {len(wrong)} misread{shown}")
        root, ext = os.path.splitext(output)
        path = f"{root}.{row.replace('@', '_')}{ext or '.png'}"
        sheet.save(path)
        print(f"wrote {path}: {len(wrong)} misread on {worst['set']}")


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    unknown = [n for n in FLAGS.sets if n not in SETS] + [r for r in FLAGS.rows if r not in ROWS]
    if unknown:
        raise app.UsageError(f"Unknown sets or rows: {', '.join(unknown)}. Sets: {', '.join(SETS)}; "
                             f"rows: {', '.join(ROWS)}.")
    records = read_results(FLAGS.results)
    done = {(r["set"], r["row"]) for r in records if "skipped" not in r}
    suffix = f"+tta{FLAGS.tta}" if FLAGS.tta else ""
    for name in FLAGS.sets:
        paths, labels = labelled(os.path.join(FLAGS.data_dir, SETS[name]))
        for row in FLAGS.rows:
            if (name, row + suffix) in done:
                continue
            try:
                record = run_row(name, row, paths, labels)
                print(f"{name} {row}{suffix}: whole-image {record['image_accuracy']:.4f}, character "
                      f"{record['character_accuracy']:.4f}, {record['ms_per_image']} ms/image", flush=True)
            except Skipped as reason:
                record = {"set": name, "row": row + suffix, "date": time.strftime("%Y-%m-%d"),
                          "skipped": str(reason)}
                print(f"{name} {row}{suffix}: skipped: {reason}", flush=True)
            with open(FLAGS.results, "a") as f:
                f.write(json.dumps(record) + "\n")
            records.append(record)
    rows = [row + suffix for row in FLAGS.rows]
    chosen = latest(records, FLAGS.sets, rows)
    print(table(chosen, FLAGS.sets, rows))
    label_errors = read_label_errors(FLAGS.label_errors)
    if label_errors:
        counts = ", ".join(f"{s} {sum(k[0] == s for k in label_errors)}" for s in FLAGS.sets)
        print(f"\nThe same, scored against the test labels corrected where the image plainly shows another text "
              f"({os.path.relpath(FLAGS.label_errors, REPO)}: {counts}):")
        print(table(corrected(chosen, label_errors), FLAGS.sets, rows))
    if FLAGS.errors_png:
        draw_errors(chosen, FLAGS.sets, rows, FLAGS.errors_png)


if __name__ == "__main__":
    app.run(main)
