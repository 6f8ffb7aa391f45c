"""Validate a folder of labelled images, quarantine the bad ones and split the rest into train/val/test.

Every file under the input folder (recursively) ends up in exactly one place under the output folder:
`train/`, `val/` or `test/`, named `<label>_<name>` so that `kcaptcha.data` reads the label from the
name, or `rejected/<reason>/` under its own name. Nothing is deleted or overwritten (a name already
taken by other content gets a `-1`, `-2`, ... suffix), and `manifest.json` says where each file went.
The split is a pure function of the set of accepted files and the seed, so a re-run changes nothing.
"""

import collections
import concurrent.futures
import csv
import dataclasses
import hashlib
import json
import os
import shutil
import unicodedata
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from kcaptcha.files import IMAGE_EXTENSIONS

SPLITS = ("train", "val", "test")
REASONS = ("unreadable", "empty_file", "not_an_image", "truncated", "unsupported_format", "no_label",
           "bad_characters", "bad_length")
# What `kcaptcha.data.decode_image` (tf.io.decode_image) reads, and the extension such a file gets.
FORMAT_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "GIF": ".gif", "BMP": ".bmp"}
MAX_OFFENDERS = 10
AUTO = "auto"  # the charset that means: collect it from the labels
_NEVER_IN_LABELS = "_/\\"  # a label is the file-name prefix before '_', so these can never round-trip


@dataclasses.dataclass
class FileCheck:
    """What was found about one input file; `reason` is None for an accepted file."""

    path: str  # relative to the input folder, '/'-separated
    sha256: str = ""
    image_format: str = ""
    size: Optional[Tuple[int, int]] = None
    label: Optional[str] = None
    reason: Optional[str] = None
    message: str = ""


def parse_split(text: str) -> Tuple[float, float, float]:
    """'0.9,0.05,0.05' -> (train, val, test) fractions; raises `ValueError` unless they sum to 1."""
    try:
        return check_split([float(part) for part in str(text).split(",")])
    except ValueError as error:
        reason = str(error) if str(error).startswith("split") else "split must be three numbers: train,val,test."
        raise ValueError(f"{reason} Received: split={text!r}") from None


def check_split(fractions: Sequence[float]) -> Tuple[float, float, float]:
    if len(fractions) != 3 or any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ValueError("split must be three fractions in [0, 1]: train,val,test.")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, not {sum(fractions):g}.")
    return tuple(float(f) for f in fractions)


def read_labels_csv(path: str) -> Dict[str, str]:
    """`filename,label` rows (header optional) -> {'/'-separated relative path: label}."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Labels CSV not found: {path!r}")
    labels = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for line_number, row in enumerate(csv.reader(f), start=1):
            if not row or (line_number == 1 and [c.strip().lower() for c in row[:2]] == ["filename", "label"]):
                continue
            if len(row) < 2:
                raise ValueError(f"{path}, line {line_number}: expected 'filename,label'. Received: {row}")
            labels[_normalise_relative(row[0].strip())] = row[1].strip()
    return labels


def _normalise_relative(path: str) -> str:
    return os.path.normpath(path).replace(os.sep, "/")


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def find_files(input_dir: str, skip: Iterable[str] = ()) -> List[str]:
    """Every regular file under `input_dir` except `skip`, as sorted '/'-separated relative paths."""
    if not os.path.exists(input_dir):
        raise FileNotFoundError(f"Input folder not found: {input_dir!r}")
    if not os.path.isdir(input_dir):
        raise NotADirectoryError(f"Input is not a folder: {input_dir!r}")
    skip = {os.path.realpath(p) for p in skip}
    found = []
    for root, dirs, files in os.walk(input_dir):
        dirs.sort()
        for name in files:
            full = os.path.join(root, name)
            if os.path.realpath(full) not in skip and os.path.isfile(full):
                found.append(_normalise_relative(os.path.relpath(full, input_dir)))
    return sorted(found)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_image(input_dir: str, relative_path: str) -> FileCheck:
    """Hashes one file and checks that it is a complete image the training pipeline can decode."""
    check = FileCheck(relative_path)
    path = os.path.join(input_dir, relative_path)
    try:
        check.sha256 = _sha256(path)
    except OSError as error:
        return dataclasses.replace(check, reason="unreadable", message=f"cannot read the file: {error}")
    if os.path.getsize(path) == 0:
        return dataclasses.replace(check, reason="empty_file", message="the file is empty (0 bytes)")
    # PIL raises many exception types (SyntaxError for broken PNG chunks, OSError, ...): any is a bad file.
    try:
        image = Image.open(path)
    except Exception as error:  # noqa: BLE001
        detail = "no image format recognised" if isinstance(error, UnidentifiedImageError) else str(error)
        return dataclasses.replace(check, reason="not_an_image", message=f"not an image by its content: {detail}")
    with image:
        check.image_format = image.format or "unknown"
        try:
            image.verify()
        except Exception as error:  # noqa: BLE001
            return dataclasses.replace(check, reason="truncated", message=f"corrupt {check.image_format} data: {error}")
    if check.image_format not in FORMAT_EXTENSIONS:
        return dataclasses.replace(check, reason="unsupported_format", message=(
            f"{check.image_format} images are not read by the training pipeline; convert to PNG"))
    try:
        with Image.open(path) as image:  # verify() does not decode pixels; load() does
            image.load()
            check.size = image.size
    except Exception as error:  # noqa: BLE001
        return dataclasses.replace(check, reason="truncated", message=f"image data cannot be decoded: {error}")
    return check


def label_for(relative_path: str, labels_csv: Optional[Dict[str, str]], lowercase: bool) -> Optional[str]:
    """The CSV's label, else the file-name prefix before the first '_'; None if there is neither."""
    if labels_csv is not None and relative_path in labels_csv:
        label = labels_csv[relative_path]
    else:
        name = relative_path.rsplit("/", 1)[-1]
        if "_" not in name:
            return None
        label = name.split("_", 1)[0]
    label = unicodedata.normalize("NFC", label)
    return label.lower() if lowercase else label


def auto_charset(labels: Iterable[str]) -> str:
    """The sorted set of characters used by `labels`, leaving out those a label may never hold."""
    return "".join(sorted({c for label in labels for c in label
                           if c not in _NEVER_IN_LABELS and c.isprintable() and not c.isspace()}))


def check_label(label: Optional[str], charset: str, min_length: int, max_length: int,
                has_csv: bool) -> Tuple[Optional[str], str]:
    """(reason, message) for a label that cannot be trained on, or (None, '')."""
    if not label:
        where = "the labels CSV has no entry for it and " if has_csv else ""
        return "no_label", f"{where}the name has no '<label>_' prefix" if label is None else "the label is empty"
    bad = sorted({c for c in label if c not in charset or c in _NEVER_IN_LABELS})
    if bad:
        message = f"label {label!r} has characters {''.join(bad)!r} outside the charset {charset!r}"
        if charset == charset.lower() and all(c.lower() in charset for c in bad):
            message += "; the charset is lower case: pass --lowercase to lower-case labels"
        return "bad_characters", message
    if not min_length <= len(label) <= max_length:
        allowed = str(min_length) if min_length == max_length else f"{min_length}-{max_length}"
        return "bad_length", f"label {label!r} has length {len(label)}, not the allowed {allowed}"
    return None, ""


def assign_splits(accepted: Sequence[FileCheck], fractions: Sequence[float], seed: int) -> Dict[str, str]:
    """{relative path: split}. Byte-identical files stay together, so no image is in two splits."""
    groups = collections.OrderedDict()
    for check in sorted(accepted, key=lambda c: c.path):
        groups.setdefault(check.sha256, []).append(check.path)
    bounds = np.round(np.cumsum(fractions) * len(accepted)).astype(int)
    targets = np.diff(np.concatenate([[0], bounds]))
    targets[-1] = len(accepted) - targets[:-1].sum()
    filled, split_index, assignment = [0, 0, 0], 0, {}
    group_list = list(groups.values())
    for index in np.random.default_rng(seed).permutation(len(group_list)):
        while split_index < len(SPLITS) - 1 and filled[split_index] >= targets[split_index]:
            split_index += 1
        for path in group_list[index]:
            assignment[path] = SPLITS[split_index]
        filled[split_index] += len(group_list[index])
    return assignment


def output_name(check: FileCheck) -> str:
    """`<label>_<name>` (the original name if it already starts with `<label>_`), with an image extension."""
    name = check.path.rsplit("/", 1)[-1]
    stem, extension = os.path.splitext(name)
    if extension.lower() not in IMAGE_EXTENSIONS:
        stem, extension = name, FORMAT_EXTENSIONS[check.image_format]
    name = stem + extension
    return name if name.startswith(check.label + "_") else f"{check.label}_{name}"


class _Destinations:
    """Hands out output paths: never one taken by other content, never the same one twice in a run."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.claimed = set()

    def claim(self, folder: str, name: str, sha256: str) -> str:
        stem, extension = os.path.splitext(name)
        for attempt in range(1_000_000):
            relative = f"{folder}/{stem}-{attempt}{extension}" if attempt else f"{folder}/{name}"
            full = os.path.join(self.output_dir, relative)
            if relative not in self.claimed and (not os.path.lexists(full) or _sha256(full) == sha256):
                self.claimed.add(relative)
                return relative
        raise RuntimeError(f"No free name for {name!r} in {folder!r}")


def _transfer(source: str, destination: str, move: bool) -> str:
    """Copies (or moves) `source` to `destination`; 'present' if the same content is already there."""
    if os.path.lexists(destination):  # _Destinations checked that its content is identical
        if move:
            os.remove(source)
        return "present"
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    if move:
        try:
            os.rename(source, destination)
            return "written"
        except OSError:  # another file system: copy, then remove the source
            pass
    partial = os.path.join(os.path.dirname(destination), f".{os.path.basename(destination)}.partial")
    shutil.copy2(source, partial)
    os.replace(partial, destination)  # a crash never leaves a half-written file under the real name
    if move:
        os.remove(source)
    return "written"


def _offender(check: FileCheck) -> dict:
    return {"path": check.path, "message": check.message}


def _write_json(path: str, value) -> None:
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, ensure_ascii=False, sort_keys=True)
        f.write("\n")
    os.replace(partial, path)


def prepare(input_dir: str, output_dir: str, config, split: Sequence[float] = (0.9, 0.05, 0.05),
            labels_csv: Optional[str] = None, lowercase: bool = False, move: bool = False,
            progress: bool = True) -> dict:
    """Checks every file under `input_dir`, then copies (or moves) it into `output_dir`.

    Args:
        input_dir: folder of labelled images, searched recursively.
        output_dir: gets `train/`, `val/`, `test/`, `rejected/<reason>/`, `manifest.json`, `report.json`.
        config: a `Config`; uses charset (`AUTO`: the sorted characters of the labels found), min_length,
            max_length, width, height, seed and workers.
        split: train, val and test fractions, summing to 1.
        labels_csv: optional `filename,label` CSV; file names are relative to `input_dir`.
        lowercase: lower-case labels before checking them.
        move: move files instead of copying them.
        progress: show tqdm progress bars.

    Returns:
        The report (also written to `output_dir/report.json`).
    """
    from tqdm import tqdm

    split = check_split(split)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise NotADirectoryError(f"The output path is a file, not a folder: {output_dir!r}")
    if os.path.isdir(input_dir) and _inside(output_dir, input_dir):
        raise ValueError(f"The output folder {output_dir!r} is inside the input folder {input_dir!r}; "
                         "choose an output folder outside it.")
    if os.path.isdir(input_dir) and any(_inside(input_dir, os.path.join(output_dir, sub))
                                        for sub in (*SPLITS, "rejected")):
        raise ValueError(f"The input folder {input_dir!r} is one of prepare's own outputs in {output_dir!r}.")
    paths = find_files(input_dir, skip=[labels_csv] if labels_csv else [])
    csv_labels = read_labels_csv(labels_csv) if labels_csv else None
    if not paths:
        hint = " (a previous --move emptied it?)" if os.path.exists(os.path.join(output_dir, "manifest.json")) else ""
        raise ValueError(f"No files found in the input folder {input_dir!r}{hint}.")

    workers = config.workers if config.workers > 0 else min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:  # PIL and hashing release the GIL
        checks = list(tqdm(pool.map(lambda p: check_image(input_dir, p), paths), total=len(paths),
                           desc="check", unit="file", disable=not progress))

    images = [c for c in checks if c.reason is None]
    for check in images:
        check.label = label_for(check.path, csv_labels, lowercase)
    charset = auto_charset(c.label for c in images if c.label) if config.charset == AUTO else config.charset
    for check in images:
        check.reason, check.message = check_label(check.label, charset, config.min_length, config.max_length,
                                                  csv_labels is not None)
    accepted = [c for c in checks if c.reason is None]
    splits = assign_splits(accepted, split, config.seed)

    destinations = _Destinations(output_dir)
    manifest, outcomes = [], collections.Counter()
    for check in tqdm(checks, desc="move" if move else "copy", unit="file", disable=not progress):
        if check.reason is None:
            relative = destinations.claim(splits[check.path], output_name(check), check.sha256)
        else:
            relative = destinations.claim(f"rejected/{check.reason}", check.path.rsplit("/", 1)[-1], check.sha256)
        outcomes[_transfer(os.path.join(input_dir, check.path), os.path.join(output_dir, relative), move)] += 1
        manifest.append({"path": check.path, "label": check.label, "sha256": check.sha256,
                         "split": splits.get(check.path), "reason": check.reason, "message": check.message,
                         "size": list(check.size) if check.size else None, "output": relative})
    for sub in SPLITS:
        os.makedirs(os.path.join(output_dir, sub), exist_ok=True)

    report = _report(checks, splits, destinations.claimed, output_dir, charset, config, csv_labels)
    report.update(input_dir=input_dir, output_dir=output_dir, labels_csv=labels_csv, lowercase=lowercase,
                  mode="move" if move else "copy", split_fractions=dict(zip(SPLITS, split)),
                  written=outcomes["written"], already_present=outcomes["present"])
    _write_json(os.path.join(output_dir, "manifest.json"), manifest)
    _write_json(os.path.join(output_dir, "report.json"), report)
    return report


def _report(checks, splits, claimed, output_dir, charset, config, csv_labels) -> dict:
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
            stale.extend(f"{sub}/{p}" for p in find_files(os.path.join(output_dir, sub))
                         if f"{sub}/{p}" not in claimed)
    if stale:
        warnings["stale_outputs"] = len(stale)
        offenders["stale_outputs"] = [{"path": p, "message": "in the output folder but not from this run"}
                                      for p in stale[:MAX_OFFENDERS]]
    rejected = collections.Counter(c.reason for c in checks if c.reason)
    per_split = collections.Counter(splits.values())
    return {
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
