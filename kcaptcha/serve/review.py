"""`ReviewQueue`: a folder of images and its `labels.csv`, handed to reviewers least sure first.

The folder is one that `bin/collect` filled (its `labels.csv` holds the model's readings) or one that
`bin/serve --save_uploads` filled (`<prediction>_<time>.png`, no `labels.csv`): images without a reading
are read once, when the queue opens, by the served model, and their readings written to `labels.csv` as
`unreviewed` rows. Images are never renamed, moved or deleted; each decision updates `labels.csv` at once
(atomically, under the folder's lock, so two reviewers, or a reviewer and `bin/collect`, lose nothing).

A decision is taken only on an image handed to that reviewer (`leases`), and only while it is undecided;
an explicit override decides any image, decided or not, and is logged. An accepted label must be one word
of the folder's charset and lengths (`labels.LabelRules`): those given, else those of the model that read
`labels.csv` (its `labels.json`), else those of the served model that reads the folder.
"""

import json
import logging
import os
import threading
import time
import unicodedata
from typing import Dict, List, Optional

from kcaptcha import files
from kcaptcha.data import labels
from kcaptcha.serve.leases import Leases

logger = logging.getLogger("kcaptcha.serve")
ACTIONS = ("accept", "skip", "unreadable")  # accept: `accepted`, or `corrected` when the label was changed


class BadLabel(ValueError):
    """An accepted label the folder's rules refuse."""


class Refused(Exception):
    """A decision on an image not handed to the reviewer, or already decided; `code` names which."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code


class ReviewQueue:
    """The images under `folder` and their labels; `next_item` and `decide` are safe from several threads and
    processes.

    Args:
        folder: the folder to review (its images are listed recursively).
        recognizer: reads the images that have no reading yet (None: they are shown without one).
        claim_seconds: how long an image handed to one reviewer is kept from the others.
        charset, min_length, max_length: what an accepted label may hold; each one not given comes from the
            folder's `labels.json`, else from `recognizer`.
        clock: seconds since the epoch, for the leases (tests pass their own).
    """

    def __init__(self, folder: str, recognizer=None, claim_seconds: float = 120.0, charset: Optional[str] = None,
                 min_length: Optional[int] = None, max_length: Optional[int] = None, clock=None):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"Review folder not found: {folder!r}")
        self.folder, self.claim_seconds = folder, claim_seconds
        self.leases = Leases(folder, claim_seconds, clock or time.time)
        self._lock = threading.Lock()
        self._rows = self._read_missing(recognizer)
        self.rules = _rules(folder, recognizer, charset, min_length, max_length)
        logger.info("Reviewing %s: labels of %s", folder, _describe(self.rules))

    def _listed(self) -> List[str]:
        """The folder's images, as '/'-separated paths relative to it."""
        return [files.normalise_relative(os.path.relpath(path, self.folder)) for path in files.list_images(self.folder)]

    def _rows_by_name(self) -> Dict[str, labels.Row]:
        path = os.path.join(self.folder, labels.FILE)
        return {row.filename: row for row in labels.read(path)} if os.path.exists(path) else {}

    def _read_missing(self, recognizer) -> Dict[str, labels.Row]:
        """The folder's rows, after reading (and writing) the images that have no reading yet."""
        rows = self._rows_by_name()
        missing = [name for name in self._listed() if name not in rows or
                   (rows[name].status == "unreviewed" and rows[name].confidence is None)]
        if missing and recognizer is not None:
            logger.info("Reading %d images of %s that have no reading yet", len(missing), self.folder)
            changes = {}
            for start in range(0, len(missing), 256):
                changes.update(_readings(recognizer, self.folder, missing[start:start + 256]))
            rows = {row.filename: row for row in labels.update(self.folder, changes)}
            if changes and hasattr(recognizer, "vocab"):
                labels.write_rules(self.folder, labels.LabelRules.of_model(recognizer))
        for name in missing:
            rows.setdefault(name, labels.Row(name))
        return rows

    def refresh(self) -> None:
        """Rereads `labels.csv` (another reviewer, or `bin/collect`, may have changed it) and the image list."""
        rows = self._rows_by_name()
        for name in self._listed():
            rows.setdefault(name, self._rows.get(name) or labels.Row(name))
        self._rows = rows

    def order(self) -> List[labels.Row]:
        """Rows to review: unreviewed images, those without a reading first, then by lowest confidence."""
        waiting = [row for row in self._rows.values() if row.status == "unreviewed"]
        return sorted(waiting, key=lambda row: (row.confidence is not None, row.confidence or 0.0, row.filename))

    def progress(self) -> dict:
        counts = dict.fromkeys(labels.STATUSES, 0)
        for row in self._rows.values():
            counts[row.status] += 1
        return {"total": len(self._rows), "left": counts["unreviewed"], "by_status": counts}

    def path(self, filename: str) -> str:
        """The image file of a listed `filename`; `KeyError` for any other name (no path leaves the folder)."""
        if filename not in self._rows:
            raise KeyError(filename)
        return os.path.join(self.folder, *filename.split("/"))

    def next_item(self, reviewer: str) -> dict:
        """{"item": the next row for `reviewer` (or None when none is left), "progress": counts, "labels": what
        a label may hold}. The image is leased to `reviewer`: the one they hold still, else the first free."""
        with self._lock, labels.locked(self.folder):
            self.refresh()
            return self._hand_next(reviewer, self.leases.read())

    def _hand_next(self, reviewer: str, leases) -> dict:
        """`next_item` on the rows as they are, with the folder's lock held."""
        waiting = self.order()
        item = next((row for row in waiting if row.filename in leases and leases[row.filename].reviewer == reviewer),
                    None)
        item = item or next((row for row in waiting if self.leases.free(leases, row.filename, reviewer)), None)
        if item is not None:
            self.leases.write(self.leases.hand(leases, item.filename, reviewer, (row.filename for row in waiting)))
        return {"item": None if item is None else _as_dict(item), "progress": self.progress(),
                "labels": self.rules.to_dict()}

    def decide(self, reviewer: str, filename: str, action: str, label: str = "", override: bool = False) -> dict:
        """Records a decision on `filename` in `labels.csv`; then the reviewer's next item, as `next_item`.

        Without `override`, `filename` must be leased to `reviewer` and undecided; with it, any image of the
        folder may be decided again, and the change is logged.

        Raises:
            KeyError: `filename` is not an image of the folder.
            ValueError: an unknown action; `BadLabel`: an accepted label that is empty or breaks the rules.
            Refused: `filename` is not leased to `reviewer` ("not_yours") or already decided ("decided").
        """
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}. Received: action={action!r}")
        label = unicodedata.normalize("NFC", label.strip())
        if action == "accept" and not label:
            raise BadLabel("An accepted image needs a label (mark it unreadable, or skip it). Received: label=''")
        problem = self.rules.check(label) if action == "accept" else ""
        if problem:
            raise BadLabel(f"The label {label!r} cannot be saved: {problem}. Correct it, or mark the image "
                           "unreadable.")
        with self._lock, labels.locked(self.folder):
            self.refresh()
            row, leases = self._rows.get(filename), self.leases.read()
            if row is None:
                raise KeyError(filename)
            if not override and row.status != "unreviewed":
                raise Refused("decided", f"{filename!r} was decided already ({row.status}, label {row.label!r}); "
                                         "a decided image changes only with \"override\": true")
            refusal = "" if override else self.leases.refusal(leases, filename, reviewer)
            if refusal:
                raise Refused("not_yours", refusal)
            if action == "accept":
                same = label == row.label and row.status != "corrected"
                change = {"label": label, "status": "accepted" if same else "corrected"}
            else:
                change = {"status": "skipped" if action == "skip" else "unreadable"}
            if override:
                holder = leases.get(filename)
                logger.warning("Review override: %s", json.dumps({
                    "folder": self.folder, "filename": filename, "reviewer": reviewer, "action": action,
                    "before": {"label": row.label, "status": row.status}, "after": {"label": row.label, **change},
                    "leased_to": holder.reviewer if holder else None}, ensure_ascii=False))
            written = {r.filename: r for r in labels.change(self.folder, {filename: change})}
            self._rows = {**self._rows, **written}
            return self._hand_next(reviewer, leases)  # which drops the lease of the image decided


def _rules(folder: str, recognizer, charset: Optional[str], min_length: Optional[int],
           max_length: Optional[int]) -> labels.LabelRules:
    """What an accepted label may hold: each given field, else the folder's labels.json, else `recognizer`'s."""
    found = labels.read_rules(folder)
    if found is None and hasattr(recognizer, "vocab"):
        found = labels.LabelRules.of_model(recognizer, f"the {recognizer.name} model's, which reads this folder")
    found = found or labels.LabelRules()
    given = {name: value for name, value in (("charset", charset), ("min_length", min_length),
                                             ("max_length", max_length)) if value is not None}
    if not given:
        return found
    source = ", ".join(f"--review_{name}" for name in given)
    if len(given) < 3 and found.charset is not None:
        source += f"; the rest {found.source}"
    return labels.LabelRules(**{"charset": found.charset, "min_length": found.min_length,
                                "max_length": found.max_length, **given}, source=source, model=found.model)


def _describe(rules: labels.LabelRules) -> str:
    lengths = (f"{rules.min_length}" if rules.min_length == rules.max_length else
               f"{rules.min_length} or more" if rules.max_length is None else f"{rules.min_length}-{rules.max_length}")
    characters = "printable characters" if rules.charset is None else f"characters of {rules.charset!r}"
    return f"{lengths} {characters}, no spaces ({rules.source})"


def _readings(recognizer, folder: str, names: List[str]) -> Dict[str, dict]:
    """{name: label/confidence changes} of `names` read by `recognizer`; an image it cannot open gets none."""
    import numpy as np

    inputs, readable = [], []
    for name in names:
        try:
            inputs.append(recognizer.preprocess(os.path.join(folder, *name.split("/"))))
            readable.append(name)
        except Exception as error:  # a damaged file is still shown, for the reviewer to mark unreadable
            logger.warning("Cannot read %s: %s", os.path.join(folder, name), error)
    predictions = recognizer.predict_batch(np.stack(inputs)) if inputs else []
    return {name: {"label": p.text, "confidence": p.confidence, "status": "unreviewed"}
            for name, p in zip(readable, predictions)}


def _as_dict(row: labels.Row) -> dict:
    return {"filename": row.filename, "label": row.label, "confidence": row.confidence, "status": row.status}
