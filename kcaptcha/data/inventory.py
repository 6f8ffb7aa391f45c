"""What a prepared folder holds: bin/prepare's report (counts, offenders, warnings) and its text.

The report is `report.json` in the output folder; `bin/train` reads the charset, lengths and size it
records, and `label_rule_for` knows that the split folders' names carry labels as `<label>_<name>`.
"""

import collections
import os
from typing import Optional

from kcaptcha import files
from kcaptcha.data import labels as labels_csv

SPLITS = ("train", "val", "test")
REASONS = ("unreadable", "empty_file", "not_an_image", "truncated", "unsupported_format", "no_label",
           "bad_characters", "bad_length")
MAX_OFFENDERS = 10
REPORT_FILE = "report.json"
PREPARED_BY = "kcaptcha prepare"


def read_report(split_folder: str) -> Optional[dict]:
    """bin/prepare's report for a split folder it wrote (e.g. `data/v2/train`), or None."""
    path = os.path.join(os.path.dirname(os.path.abspath(split_folder)), REPORT_FILE)
    if os.path.basename(os.path.abspath(split_folder)) not in SPLITS or not os.path.isfile(path):
        return None
    try:
        report = files.read_json(path)
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and report.get("prepared_by") == PREPARED_BY else None


def label_rule_for(folder: str, label_from: str) -> files.LabelRule:
    """The rule for `folder`: a split folder of bin/prepare names its files `<label>_<name>` whatever
    rule read the raw folder, so it is read by prefix; any other folder by `label_from`."""
    report = read_report(folder)
    return files.LabelRule.parse(report["label_from"] if report else label_from)


def _relative_files(folder: str):
    return [files.normalise_relative(os.path.relpath(path, folder)) for path in files.walk_files(folder)]


def _offender(check) -> dict:
    return {"path": check.path, "message": check.message}


def build_report(checks, splits, claimed, output_dir, charset, config, csv_labels) -> dict:
    """What bin/prepare found: counts by split and reason, the first offenders of each kind, warnings."""
    offenders = collections.defaultdict(list)
    for check in checks:
        if check.reason and len(offenders[check.reason]) < MAX_OFFENDERS:
            offenders[check.reason].append(_offender(check))
    accepted = [c for c in checks if c.reason is None]
    warnings = collections.Counter()
    for check in accepted:
        if check.size != (config.width, config.height):
            warnings["size_mismatch"] += 1
            if len(offenders["size_mismatch"]) < MAX_OFFENDERS:
                offenders["size_mismatch"].append({"path": check.path, "message": (
                    f"{check.size[0]}x{check.size[1]}, not {config.width}x{config.height}; the pipeline resizes")})
    by_content = collections.defaultdict(list)
    for check in accepted:
        by_content[check.sha256].append(check)
    for first, *copies in by_content.values():
        for check in copies:
            warnings["duplicates"] += 1
            if len(offenders["duplicates"]) < MAX_OFFENDERS:
                conflict = f" with label {first.label!r}" if check.label != first.label else ""
                offenders["duplicates"].append({"path": check.path, "message": (
                    f"same bytes as {first.path}{conflict} (kept in the same split)")})
    if csv_labels is not None:
        found = {c.path for c in checks}
        missing = sorted(p for p in csv_labels if p not in found)
        if missing:
            warnings["csv_missing"] = len(missing)
            offenders["csv_missing"] = [{"path": p, "message": "listed in the labels CSV but not in the folder"}
                                        for p in missing[:MAX_OFFENDERS]]
    stale = []
    for sub in (*SPLITS, "rejected"):
        if os.path.isdir(os.path.join(output_dir, sub)):
            stale.extend(f"{sub}/{p}" for p in _relative_files(os.path.join(output_dir, sub))
                         if f"{sub}/{p}" not in claimed)
    if stale:
        warnings["stale_outputs"] = len(stale)
        offenders["stale_outputs"] = [{"path": p, "message": "in the output folder but not from this run"}
                                      for p in stale[:MAX_OFFENDERS]]
    rejected = collections.Counter(c.reason for c in checks if c.reason)
    per_split = collections.Counter(splits.values())
    return {
        "prepared_by": PREPARED_BY, "label_from": "prefix",  # the split folders' names carry labels as <label>_
        "charset": charset, "min_length": config.min_length, "max_length": config.max_length,
        "width": config.width, "height": config.height, "seed": config.seed,
        "files_in": len(checks), "accepted": len(accepted),
        "splits": {s: per_split[s] for s in SPLITS},
        "rejected": {r: rejected[r] for r in REASONS if rejected[r]}, "rejected_total": sum(rejected.values()),
        "warnings": dict(warnings), "offenders": dict(offenders),
        "image_sizes": dict(collections.Counter(f"{c.size[0]}x{c.size[1]}" for c in checks if c.size).most_common()),
        "label_lengths": dict(sorted(collections.Counter(len(c.label) for c in checks if c.label).items())),
    }


def format_report(report: dict, max_lines: int = 5) -> str:
    """The report for people: counts by reason with the first offenders, and the conservation check."""
    splits, rejected = report["splits"], report["rejected"]
    lines = [f"Checked {report['files_in']} files in {report['input_dir']}"
             + (f" (labels from {report['labels_csv']})" if report["labels_csv"] else "")
             + f"; charset {report['charset']!r}, length {report['min_length']}-{report['max_length']}, "
             f"size {report['width']}x{report['height']}",
             f"  accepted {report['accepted']}: " + ", ".join(f"{s} {splits[s]}" for s in SPLITS),
             f"  rejected {report['rejected_total']}" + (":" if rejected else "")]
    sections = [(reason, count) for reason, count in rejected.items()]
    if report["warnings"]:
        sections.append(("", 0))
    sections += [(name, count) for name, count in report["warnings"].items()]
    for name, count in sections:
        if not name:
            lines.append("  warnings (files kept):")
            continue
        lines.append(f"    {name:<18} {count}")
        shown = report["offenders"].get(name, [])[:max_lines]
        lines.extend(f"      {o['path']}: {o['message']}" for o in shown)
        if count > len(shown):
            lines.append(f"      ... and {count - len(shown)} more")
    lines.append(f"  image sizes: {report['image_sizes']}; label lengths: {report['label_lengths']}")
    total = sum(splits.values()) + report["rejected_total"]
    verdict = "ok" if total == report["files_in"] else "MISMATCH"
    lines.append(f"Files in {report['files_in']} = train {splits['train']} + val {splits['val']} + "
                 f"test {splits['test']} + rejected {report['rejected_total']} ({verdict})")
    verb = "moved" if report["mode"] == "move" else "copied"
    lines.append(f"{verb} {report['written']} files ({report['already_present']} already present) to "
                 f"{report['output_dir']}; manifest.json lists every file, report.json the first "
                 f"{MAX_OFFENDERS} of each kind")
    return "\n".join(lines)


MAX_MODEL_HEIGHT = 64  # taller images are scaled down to this height, keeping their aspect ratio


def describe_folder(folder: str, label_from: str = "prefix") -> dict:
    """The task a folder of labelled images implies: charset, label lengths, the most common image size and
    how many images it holds; from bin/prepare's report when it wrote the folder, else from the files."""
    from PIL import Image

    report = read_report(folder)
    paths = files.list_images(folder)
    if report:
        size = max(report["image_sizes"].items(), key=lambda item: item[1])[0]
        width, height = (int(v) for v in size.split("x"))
        return {"charset": report["charset"], "min_length": report["min_length"],
                "max_length": report["max_length"], "width": width, "height": height, "images": len(paths),
                "source": os.path.join(os.path.dirname(os.path.abspath(folder)), REPORT_FILE)}
    listed = labels_csv.folder_labels(folder)
    if listed:
        paths, labels = listed
    else:
        rule = label_rule_for(folder, label_from)
        labels = [label for label in map(rule.label, paths) if label]
    if not labels:
        raise ValueError(f"No image in {folder!r} carries a label in its name (label_from={label_from!r})")
    sizes = collections.Counter()
    for path in paths[:500]:
        with Image.open(path) as image:
            sizes[image.size] += 1
    (width, height), _ = sizes.most_common(1)[0]
    return {"charset": "".join(sorted({c for label in labels for c in label})),
            "min_length": min(map(len, labels)), "max_length": max(map(len, labels)), "width": width,
            "height": height, "images": len(paths), "source": f"the names and sizes of the images in {folder}"}


# The folder sizes (labelled training images) at which the small-data defaults change (docs/REAL_DATA.md):
# the schedule (`folder_steps`), the synthetic share of each batch (`folder_synthetic_share`), whether
# validation may stop training early, and how often it is measured (`fill_from_folder`).
FEW_IMAGES, SOME_IMAGES, MANY_IMAGES = 500, 1000, 5000


def folder_steps(images: int) -> int:
    """Training steps for a folder of `images` labelled images (docs/REAL_DATA.md).

    captcha_images_v2: 200 images read 98.6% after 1200 steps; 832 images only 95.7% after 1200 steps,
    but 99.0-99.5% after 1800-2250 (12-14 minutes on 2 CPU cores), so 500-1000 images get 2000.
    """
    return (1200 if images <= FEW_IMAGES else 2000 if images <= SOME_IMAGES
            else 3000 if images <= MANY_IMAGES else 6000)


def folder_synthetic_share(images: int) -> float:
    """The share of synthetic captchas in each batch when training on `images` labelled images.

    None up to FEW_IMAGES: from 200 captcha_images_v2 images, half of every batch synthetic left two of
    five runs on CTC's blank plateau for all 1200 steps (they read nothing), while the folder's images
    alone learnt in every fold and read as well where both learnt (docs/REAL_DATA.md). Then half, a
    quarter, and none above MANY_IMAGES.
    """
    return 0.0 if images <= FEW_IMAGES else 0.5 if images <= SOME_IMAGES else 0.25 if images <= MANY_IMAGES else 0.0


def fill_from_folder(config, given) -> tuple:
    """`config` with the task and small-data training settings a training folder implies, where not `given`.

    Returns (config, notes for people).
    """
    if not config.train_dir:
        return config, []
    found = describe_folder(config.train_dir, config.label_from)
    width, height = found["width"], found["height"]
    if height > MAX_MODEL_HEIGHT:
        width, height = max(16, round(width * MAX_MODEL_HEIGHT / height / 4) * 4), MAX_MODEL_HEIGHT
    task = {"charset": found["charset"], "min_length": found["min_length"], "max_length": found["max_length"],
            "width": width, "height": height}
    small = found["images"] <= MANY_IMAGES
    training = {"style": "varied", "eval_every_steps": 100 if small else 250, "patience": 20 if small else 10,
                "max_steps": folder_steps(found["images"]), "target_accuracy": 1.0}
    if found["images"] <= SOME_IMAGES:  # its validation set is too small to stop on: run the whole short schedule
        training["min_steps"] = training["max_steps"] if "max_steps" not in given else config.max_steps
    changes = {k: v for k, v in {**task, **training}.items() if k not in given}
    notes = [f"{found['images']} images in {config.train_dir}; from {found['source']}, chose "
             + ", ".join(f"{k}={v!r}" for k, v in changes.items() if k in task)] if changes else []
    if any(k in training for k in changes):
        notes.append("For a small folder, chose " + ", ".join(f"{k}={v}" for k, v in changes.items() if k in training))
    return config.replace(**changes), notes
