"""A folder's `labels.csv`: which label each image has, how sure the model was, and whether a person checked.

    filename,label,confidence,status
    3f9a1c0d2b7e4a51.png,x7k2m,0.4113,unreviewed
    8e21c47aa0f94d3b.png,4pq9z,0.9920,accepted

Status is `unreviewed` (a model's reading, or no reading), `accepted` (a person confirmed it),
`corrected` (a person typed the label), `skipped` or `unreadable`. Training reads only rows a person
reviewed (`accepted`, `corrected`); a plain `filename,label` CSV (no status column) is all labels.
Every change rewrites the file atomically under a lock, so two reviewers (or a reviewer and `bin/collect`)
never lose each other's rows.
"""

import contextlib
import csv
import dataclasses
import io
import os
from typing import Dict, List, Optional, Tuple

from kcaptcha import files

FILE = "labels.csv"
COLUMNS = ("filename", "label", "confidence", "status")
STATUSES = ("unreviewed", "accepted", "corrected", "skipped", "unreadable")
REVIEWED = ("accepted", "corrected")


@dataclasses.dataclass
class Row:
    filename: str  # '/'-separated, relative to the CSV's folder
    label: str = ""
    confidence: Optional[float] = None
    status: str = "unreviewed"

    @property
    def reviewed(self) -> bool:
        return self.status in REVIEWED


def read(path: str) -> List[Row]:
    """The rows of a labels CSV (with or without the status columns); a clear error naming a bad line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Labels CSV not found: {path!r}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        lines = list(csv.reader(f))
    header = [c.strip().lower() for c in lines[0]] if lines else []
    named = header[:2] == ["filename", "label"]
    rows = []
    for number, cells in enumerate(lines[1:] if named else lines, start=2 if named else 1):
        if not cells or not "".join(cells).strip():
            continue
        values = dict(zip(header if named else COLUMNS[:2], (c.strip() for c in cells)))
        if len(cells) < 2 or not values.get("filename"):
            raise ValueError(f"{path}, line {number}: expected 'filename,label[,confidence,status]'. Received: {cells}")
        status = values.get("status") or ("accepted" if "status" not in header else "unreviewed")
        if status not in STATUSES:
            raise ValueError(f"{path}, line {number}: status must be one of {', '.join(STATUSES)}. Received: {status!r}")
        confidence = values.get("confidence")
        rows.append(Row(files.normalise_relative(values["filename"]), values.get("label", ""),
                        float(confidence) if confidence not in (None, "") else None, status))
    return rows


def training_labels(path: str) -> Dict[str, str]:
    """{relative path: label} of the rows a person reviewed (every row of a plain filename,label CSV)."""
    return {row.filename: row.label for row in read(path) if row.reviewed and row.label}


def folder_labels(folder: str) -> Optional[Tuple[List[str], List[str]]]:
    """(image paths, labels) of the reviewed rows of `folder/labels.csv`, or None when it has no labels.csv."""
    path = os.path.join(folder, FILE)
    if not os.path.isfile(path):
        return None
    chosen = [(os.path.join(folder, name), label) for name, label in sorted(training_labels(path).items())]
    missing = [p for p, _ in chosen if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{path} lists {len(missing)} images that are not in {folder}, e.g. {missing[0]!r}")
    return [p for p, _ in chosen], [label for _, label in chosen]


def write(path: str, rows: List[Row]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([row.filename, row.label, "" if row.confidence is None else f"{row.confidence:.4f}",
                         row.status])
    files.atomic_write_text(path, buffer.getvalue())


@contextlib.contextmanager
def locked(folder: str):
    """Holds the folder's label lock: read, change and write the rows inside, one writer at a time."""
    import fcntl  # POSIX; imported here so that reading labels works everywhere

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ".labels.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update(folder: str, changes: Dict[str, dict]) -> List[Row]:
    """Applies {filename: {field: value}} to `folder/labels.csv` (adding rows for new files) atomically."""
    path = os.path.join(folder, FILE)
    with locked(folder):
        rows = read(path) if os.path.exists(path) else []
        by_name = {row.filename: row for row in rows}
        for filename, fields in changes.items():
            row = by_name.get(filename)
            if row is None:
                row = by_name[filename] = Row(filename)
                rows.append(row)
            for key, value in fields.items():
                if key == "status" and value not in STATUSES:
                    raise ValueError(f"status must be one of {', '.join(STATUSES)}. Received: {value!r}")
                setattr(row, key, value)
        write(path, rows)
    return rows
