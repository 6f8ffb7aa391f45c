"""`ReviewQueue`: a folder of images and its `labels.csv`, handed to reviewers least sure first.

The folder is one that `bin/collect` filled (its `labels.csv` holds the model's readings) or one that
`bin/serve --save_uploads` filled (`<prediction>_<time>.png`, no `labels.csv`): images without a reading
are read once, when the queue opens, by the served model, and their readings written to `labels.csv` as
`unreviewed` rows. Images are never renamed, moved or deleted; each decision updates `labels.csv` at once
(atomically, under the folder's lock, so two reviewers, or a reviewer and `bin/collect`, lose nothing).

Two reviewers at once are given different images: the image handed to a reviewer is theirs for
`claim_seconds` (or until they decide), and the next reviewer gets the next one.
"""

import logging
import os
import threading
import time
from typing import Dict, List, Tuple

from kcaptcha import files
from kcaptcha.data import labels

logger = logging.getLogger("kcaptcha.serve")
ACTIONS = ("accept", "skip", "unreadable")  # accept: `accepted`, or `corrected` when the label was changed


class ReviewQueue:
    """The images under `folder` and their labels; `next_item` and `decide` are safe from several threads.

    Args:
        folder: the folder to review (its images are listed recursively).
        recognizer: reads the images that have no reading yet (None: they are shown without one).
        claim_seconds: how long an image handed to one reviewer is kept from the others.
    """

    def __init__(self, folder: str, recognizer=None, claim_seconds: float = 120.0):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"Review folder not found: {folder!r}")
        self.folder, self.claim_seconds = folder, claim_seconds
        self._lock = threading.Lock()
        self._claims: Dict[str, Tuple[str, float]] = {}  # filename -> (reviewer, until)
        self._rows = self._read_missing(recognizer)

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
        """{"item": the next row for `reviewer` (or None when none is left), "progress": counts}."""
        with self._lock:
            self.refresh()
            now = time.monotonic()
            self._claims = {name: claim for name, claim in self._claims.items() if claim[1] > now}
            item = next((row for row in self.order()
                         if self._claims.get(row.filename, (reviewer,))[0] == reviewer), None)
            if item is not None:
                self._claims[item.filename] = (reviewer, now + self.claim_seconds)
            return {"item": None if item is None else _as_dict(item), "progress": self.progress()}

    def decide(self, reviewer: str, filename: str, action: str, label: str = "") -> dict:
        """Records a decision on `filename` in `labels.csv`; then the reviewer's next item, as `next_item`.

        Raises:
            KeyError: `filename` is not an image of the folder.
            ValueError: an unknown action, or accepting an empty label.
        """
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}. Received: action={action!r}")
        label = label.strip()
        if action == "accept" and not label:
            raise ValueError("An accepted image needs a label (mark it unreadable, or skip it). Received: label=''")
        with self._lock:
            row = self._rows.get(filename)
            if row is None:
                raise KeyError(filename)
            if action == "accept":
                change = {"label": label, "status": "accepted" if label == row.label else "corrected"}
            else:
                change = {"status": "skipped" if action == "skip" else "unreadable"}
            self._rows = {r.filename: r for r in labels.update(self.folder, {filename: change})}
            self._claims.pop(filename, None)
        return self.next_item(reviewer)


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
