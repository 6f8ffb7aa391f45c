"""What a prepared folder holds: bin/prepare's report (counts, offenders, warnings) and its text.

The report is `report.json` in the output folder; `kcaptcha.data.folder` reads it to know that the split
folders' names carry labels as `<label>_<name>`.
"""

import collections
import os
from typing import Optional

from kcaptcha import files

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


def _relative_files(folder: str):
    return [files.normalise_relative(os.path.relpath(path, folder)) for path in files.walk_files(folder)]


def _offender(check) -> dict:
    return {"path": check.path, "message": check.message}


def build_report(checks, splits, claimed, output_dir, config, csv_labels) -> dict:
    """What bin/prepare found: counts by split and reason, the first offenders of each kind, warnings."""
    offenders = collections.defaultdict(list)
    for check in checks:
        if check.reason and len(offenders[check.reason]) < MAX_OFFENDERS:
            offenders[check.reason].append(_offender(check))
    accepted = [c for c in checks if c.reason is None]
    warnings = collections.Counter()  # images of several sizes are no warning: training reads the most common
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
        "charset": config.charset, "min_length": config.min_length, "max_length": config.max_length,
        "seed": config.seed,
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
             + f"; charset {report['charset']!r}, length {report['min_length']}-{report['max_length']}",
             f"  accepted {report['accepted']}: " + ", ".join(f"{s} {splits[s]}" for s in SPLITS),
             f"  rejected {report['rejected_total']}" + (":" if rejected else "")]
    if report.get("ignored"):
        lines.insert(1, f"  left where they are (not images): {', '.join(report['ignored'])}")
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
