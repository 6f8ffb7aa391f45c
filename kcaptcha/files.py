"""Finding labelled image files (no TensorFlow here, so commands can fail fast on bad paths)."""

import csv
import os
from typing import List

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")


def label_from_filename(path: str) -> str:
    """`<label>_<anything>.<ext>` -> label; a name without `_` is all label (e.g. `226md.png`)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem.split("_", 1)[0]


def list_images(folder: str, recursive: bool = True) -> List[str]:
    """Image files under `folder` by extension, sorted; raises a clear error for a missing folder."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Image folder not found: {folder!r}")
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found.extend(os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not recursive:
            break
    return found


def read_labels_csv(path: str) -> dict:
    """`filename,label` rows (a header row is skipped) -> {filename: label}."""
    labels = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if len(row) < 2 or row[:2] == ["filename", "label"]:
                continue
            labels[row[0].strip()] = row[1].strip()
    return labels
