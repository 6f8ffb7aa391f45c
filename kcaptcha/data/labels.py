"""A folder's `labels.csv`: which label each image has, how sure the model was, and whether a person checked.

    filename,label,confidence,status
    3f9a1c0d2b7e4a51.png,x7k2m,0.4113,unreviewed
    8e21c47aa0f94d3b.png,4pq9z,0.9920,accepted

Status is `unreviewed` (a model's reading, or no reading), `accepted` (a person confirmed it),
`corrected` (a person typed the label), `skipped` or `unreadable`. Training reads only rows a person
reviewed (`accepted`, `corrected`); a plain `filename,label` CSV (no status column) is all labels.
Every change rewrites the file atomically under a lock, so two reviewers (or a reviewer and `bin/collect`)
never lose each other's rows.

What a label of the folder may hold is in `labels.json` beside it (`LabelRules`): the charset and label
lengths of the model that read the images, written by `bin/collect --model` or by the review when its model
reads the folder, and never overwritten.

    {"model": "general", "charset": "0123456789abcdefghijklmnopqrstuvwxyz", "min_length": 3, "max_length": 8}
"""

import contextlib
import csv
import dataclasses
import io
import os
import unicodedata
from typing import Dict, List, Optional, Tuple

from kcaptcha import files
from kcaptcha.reading.vocab import Vocab

FILE = "labels.csv"
RULES_FILE = "labels.json"
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
    with locked(folder):
        return change(folder, changes)


def change(folder: str, changes: Dict[str, dict]) -> List[Row]:
    """`update` for a caller that already holds `locked(folder)` (to check the rows before changing them)."""
    path = os.path.join(folder, FILE)
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


@dataclasses.dataclass(frozen=True)
class LabelRules:
    """What a label may hold: one word of printable characters, and, when known, only characters of `charset`
    at `min_length` to `max_length` of them; `source` says where the rules come from, in every refusal."""

    charset: Optional[str] = None
    min_length: int = 1
    max_length: Optional[int] = None
    source: str = "no model"
    model: str = ""

    def __post_init__(self):
        if self.charset is not None and (not self.charset or self.check_word(self.charset)):
            raise ValueError(f"A charset is one or more printable characters without spaces. Received: "
                             f"charset={self.charset!r} ({self.source})")
        if self.min_length < 1 or (self.max_length is not None and self.max_length < self.min_length):
            raise ValueError(f"Label lengths must satisfy 1 <= min_length <= max_length. Received: "
                             f"min_length={self.min_length}, max_length={self.max_length} ({self.source})")

    @staticmethod
    def check_word(label: str) -> str:
        """What makes `label` no single word of printable characters, or ''."""
        odd = sorted({c for c in label if c.isspace() or not c.isprintable()})
        if not odd:
            return ""
        names = [{" ": "a space", "\n": "a line break", "\r": "a line break", "\t": "a tab"}.get(c, f"{c!r}")
                 for c in odd]
        return f"it holds {', '.join(dict.fromkeys(names))}, and a label is one word of printable characters"

    def check(self, label: str) -> str:
        """What is wrong with `label` (NFC-normalised), or '' when it may be saved."""
        label = unicodedata.normalize("NFC", label)
        if self.check_word(label):
            return self.check_word(label)
        longest = self.max_length or max(len(label), self.min_length)
        if self.charset is None:
            problem = Vocab(label, self.min_length, longest).check(label)  # the lengths alone
        else:
            problem = Vocab(self.charset, self.min_length, longest).check(label)
            bad = {c for c in label if c not in self.charset}
            if bad and all(c.swapcase() in self.charset for c in bad):
                problem += ", which holds them in the other case"
        return f"{problem} ({self.source})" if problem else ""

    def to_dict(self) -> dict:
        return {"charset": self.charset, "min_length": self.min_length, "max_length": self.max_length,
                "source": self.source}

    @classmethod
    def of_model(cls, recognizer, source: str = "") -> "LabelRules":
        """The charset and lengths `recognizer` reads."""
        vocab = recognizer.vocab
        return cls(vocab.charset, vocab.min_length, vocab.max_length, source or f"the {recognizer.name} model's",
                   recognizer.name)


def read_rules(folder: str) -> Optional[LabelRules]:
    """The rules of `folder/labels.json`, or None when it has none; a clear error for a damaged file."""
    path = os.path.join(folder, RULES_FILE)
    if not os.path.isfile(path):
        return None
    try:
        found = files.read_json(path)
        return LabelRules(found.get("charset"), int(found.get("min_length", 1)),
                          None if found.get("max_length") is None else int(found["max_length"]),
                          f"{path}, the {found.get('model') or 'unnamed'} model's", found.get("model") or "")
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{path} is not a label rules file ({error}); expected "
                         '{"model", "charset", "min_length", "max_length"}') from None


def write_rules(folder: str, rules: LabelRules) -> bool:
    """Writes `rules` to `folder/labels.json` unless the folder has rules already; True when written."""
    path = os.path.join(folder, RULES_FILE)
    if os.path.exists(path):
        return False
    files.atomic_write_json(path, {"model": rules.model, "charset": rules.charset, "min_length": rules.min_length,
                                   "max_length": rules.max_length}, indent=2)
    return True
