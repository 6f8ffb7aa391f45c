"""Validate a folder of labelled images, quarantine the bad ones and split the rest into train/val/test.

Every file under the input folder (recursively) ends up in exactly one place under the output folder:
`train/`, `val/` or `test/`, named `<label>_<name>` so that `kcaptcha.data.pipeline` reads the label from the
name, or `rejected/<reason>/` under its own name. Nothing is deleted or overwritten (a name already
taken by other content gets a `-1`, `-2`, ... suffix), and `manifest.json` says where each file went.
The split is a pure function of the set of accepted files and the seed, so a re-run changes nothing.
"""

import collections
import concurrent.futures
import dataclasses
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from kcaptcha import files
from kcaptcha.data import inventory
from kcaptcha.data import labels as labels_file  # not `labels_csv`: prepare() takes a path of that name
from kcaptcha.data.folder import LabelSource
from kcaptcha.files import FORMAT_EXTENSIONS, IMAGE_EXTENSIONS, LabelRule

SPLITS = inventory.SPLITS
AUTO = "auto"  # the charset that means: collect it from the labels
_NEVER_IN_LABELS = "_/\\"  # a label is the file-name prefix before '_', so these can never round-trip
DOCUMENT_EXTENSIONS = (".txt", ".md", ".rst", ".csv", ".json", ".html", ".pdf")  # left where they are


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


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def find_files(input_dir: str, skip: Iterable[str] = ()) -> Tuple[List[str], List[str]]:
    """(every regular file under `input_dir` to check, the documents and `skip` left alone), as sorted
    '/'-separated relative paths. A data set's README, licence and labels CSV are no rejected images."""
    if not os.path.exists(input_dir):
        raise FileNotFoundError(f"Input folder not found: {input_dir!r}")
    if not os.path.isdir(input_dir):
        raise NotADirectoryError(f"Input is not a folder: {input_dir!r}")
    skip = {os.path.realpath(p) for p in skip}
    checked, ignored = [], []
    for path in files.walk_files(input_dir):
        relative = files.normalise_relative(os.path.relpath(path, input_dir))
        document = path.lower().endswith(DOCUMENT_EXTENSIONS) or os.path.basename(path).upper().startswith(
            ("README", "LICENSE", "LICENCE"))
        (ignored if os.path.realpath(path) in skip or document else checked).append(relative)
    return sorted(checked), sorted(ignored)


def check_image(input_dir: str, relative_path: str) -> FileCheck:
    """Hashes one file and checks that it is a complete image the training pipeline can decode."""
    check = FileCheck(relative_path)
    path = os.path.join(input_dir, relative_path)
    try:
        check.sha256 = files.sha256(path)
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


def auto_charset(labels: Iterable[str]) -> str:
    """The sorted set of characters used by `labels`, leaving out those a label may never hold."""
    return "".join(sorted({c for label in labels for c in label
                           if c not in _NEVER_IN_LABELS and c.isprintable() and not c.isspace()}))


def check_label(label: Optional[str], charset: str, min_length: int, max_length: int,
                has_csv: bool, rule: LabelRule = LabelRule("prefix")) -> Tuple[Optional[str], str]:
    """(reason, message) for a label that cannot be trained on, or (None, '')."""
    if not label:
        where = "the labels CSV has no entry for it and " if has_csv else ""
        return "no_label", (f"{where}the name carries no label by label_from={rule!r}" if label is None
                            else "the label is empty")
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
    """`<label>_<name>` (the original name if it already starts with `<label>_`), with an image extension; the
    name alone where a file name cannot carry the label (`files.name_carries`: the split's labels.csv does)."""
    name = check.path.rsplit("/", 1)[-1]
    stem, extension = os.path.splitext(name)
    if extension.lower() not in IMAGE_EXTENSIONS:
        stem, extension = name, FORMAT_EXTENSIONS[check.image_format]
    name = stem + extension
    if name.startswith(check.label + "_") or not files.name_carries(check.label):
        return name
    return f"{check.label}_{name}"


def write_split_labels(manifest: Sequence[dict], output_dir: str) -> bool:
    """Where some label cannot be carried by a file name (`×`, `?`), writes each split's labels.csv with every
    image of the split, so that its labels come from there (`kcaptcha.data.folder`); returns whether it did."""
    placed = [entry for entry in manifest if entry["split"]]
    if all(files.name_carries(entry["label"]) for entry in placed):
        return False
    for split in SPLITS:
        rows = [labels_file.Row(entry["output"].split("/", 1)[1], entry["label"], None, "accepted")
                for entry in placed if entry["split"] == split]
        labels_file.write(os.path.join(output_dir, split, labels_file.FILE), rows)
    return True


class _Destinations:
    """Hands out output paths: never one taken by other content, never the same one twice in a run."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.claimed = set()

    def claim(self, folder: str, name: str, sha256: str) -> str:
        def free(candidate: str) -> bool:
            relative = f"{folder}/{candidate}"
            full = os.path.join(self.output_dir, relative)
            return relative not in self.claimed and (not os.path.lexists(full) or files.sha256(full) == sha256)

        relative = f"{folder}/{files.claim_free_name(folder, name, free)}"
        self.claimed.add(relative)
        return relative


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
    files.atomic_copy(source, destination)  # a crash never leaves a half-written file under the real name
    if move:
        os.remove(source)
    return "written"


def prepare(input_dir: str, output_dir: str, config, split: Sequence[float] = (0.9, 0.05, 0.05),
            labels_csv: Optional[str] = None, lowercase: bool = False, move: bool = False,
            progress: bool = True, given: Optional[Iterable[str]] = None) -> dict:
    """Checks every file under `input_dir`, then copies (or moves) it into `output_dir`.

    Args:
        input_dir: folder of labelled images, searched recursively.
        output_dir: gets `train/`, `val/`, `test/`, `rejected/<reason>/`, `manifest.json`, `report.json`.
        config: a `Config`; uses charset (`AUTO`: the sorted characters of the labels found), min_length,
            max_length, label_from, seed and data_workers.
        split: train, val and test fractions, summing to 1.
        labels_csv: optional `filename,label` CSV; file names are relative to `input_dir`.
        lowercase: lower-case labels before checking them.
        move: move files instead of copying them.
        progress: show progress bars (on a terminal).
        given: the fields of `config` to check the labels against; the charset and lengths not given come
            from the labels. None: all given.

    Returns:
        The report (also written to `output_dir/report.json`).
    """
    split = check_split(split)
    _check_folders(input_dir, output_dir)
    source = LabelSource.for_folder(input_dir, config.label_from, labels_csv, lowercase)
    paths, ignored = find_files(input_dir, skip=[source.csv_path] if source.csv_path else [])
    if not paths:
        hint = " (a previous --move emptied it?)" if os.path.exists(os.path.join(output_dir, "manifest.json")) else ""
        raise ValueError(f"No files found in the input folder {input_dir!r}{hint}.")
    checks = check_files(input_dir, paths, config.data_workers, progress)
    given = config.field_names() if given is None else frozenset(given)
    charset, low, high = label_files(checks, config, source, given)
    splits = assign_splits([c for c in checks if c.reason is None], split, config.seed)
    manifest, outcomes, claimed = place_files(checks, splits, input_dir, output_dir, move, progress)
    write_split_labels(manifest, output_dir)
    report = inventory.build_report(checks, splits, claimed, output_dir, config.replace(
        charset=charset, min_length=low, max_length=high), source.csv)
    report.update(input_dir=input_dir, output_dir=output_dir, labels_csv=source.csv_path, lowercase=lowercase,
                  ignored=ignored, charset_given="charset" in given and config.charset != AUTO,
                  mode="move" if move else "copy", split_fractions=dict(zip(SPLITS, split)),
                  written=outcomes["written"], already_present=outcomes["present"])
    files.atomic_write_json(os.path.join(output_dir, "manifest.json"), manifest, indent=1)
    files.atomic_write_json(os.path.join(output_dir, inventory.REPORT_FILE), report, indent=1)
    return report


def _check_folders(input_dir: str, output_dir: str) -> None:
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise NotADirectoryError(f"The output path is a file, not a folder: {output_dir!r}")
    if os.path.isdir(input_dir) and _inside(output_dir, input_dir):
        raise ValueError(f"The output folder {output_dir!r} is inside the input folder {input_dir!r}; "
                         "choose an output folder outside it.")
    if os.path.isdir(input_dir) and any(_inside(input_dir, os.path.join(output_dir, sub))
                                        for sub in (*SPLITS, "rejected")):
        raise ValueError(f"The input folder {input_dir!r} is one of prepare's own outputs in {output_dir!r}.")


def check_files(input_dir: str, paths: Sequence[str], workers: int, progress: bool) -> List[FileCheck]:
    """`check_image` on every path, in threads (PIL and hashing release the GIL)."""
    from tqdm import tqdm

    workers = workers if workers > 0 else min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(lambda p: check_image(input_dir, p), paths), total=len(paths),
                         desc="check", unit="file", disable=None if progress else True))


def label_files(checks: Sequence[FileCheck], config, source: LabelSource, given) -> Tuple[str, int, int]:
    """Labels every readable image and rejects those whose label cannot be trained on; returns the charset
    and lengths checked against: the config's where `given`, else what the labels hold."""
    images = [c for c in checks if c.reason is None]
    for check in images:
        check.label = source.label(check.path)
    found = [c.label for c in images if c.label]
    charset = config.charset
    if config.charset == AUTO or "charset" not in given:
        charset = auto_charset(found)
    low = config.min_length if "min_length" in given or not found else min(map(len, found))
    high = config.max_length if "max_length" in given or not found else max(map(len, found))
    for check in images:
        check.reason, check.message = check_label(check.label, charset, low, high, source.csv is not None,
                                                  source.rule)
    return charset, low, high


def place_files(checks, splits, input_dir: str, output_dir: str, move: bool, progress: bool):
    """Copies (or moves) every file to its split or `rejected/<reason>/`; returns (manifest, outcomes, claimed)."""
    from tqdm import tqdm

    destinations = _Destinations(output_dir)
    manifest, outcomes = [], collections.Counter()
    for check in tqdm(checks, desc="move" if move else "copy", unit="file", disable=None if progress else True):
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
    return manifest, outcomes, destinations.claimed
