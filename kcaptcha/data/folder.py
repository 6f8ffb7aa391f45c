"""A folder of labelled images: the one place that says which images it holds and where their labels come from.

Labels come from, in this order:
    1. a labels CSV given by path (`bin/prepare --labels_csv`), or the folder's own `labels.csv`:
       the reviewed rows (every row of a plain `filename,label` CSV); an image with no such row is
       unlabelled, never labelled from its name;
    2. for a split folder that `bin/prepare` wrote (`train/`, `val/`, `test/` beside its `report.json`),
       the name's prefix, whatever rule read the raw folder;
    3. else the file name, by `label_from` (`kcaptcha.files.LabelRule`).

Training, tuning, `bin/evaluate` and `bin/predict` read a folder through `LabelledFolder`; `bin/prepare`
labels a raw folder through `LabelSource`, the same rule.
"""

import collections
import dataclasses
import os
import unicodedata
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from kcaptcha import files
from kcaptcha.data import inventory
from kcaptcha.data import labels as labels_csv

HOLDOUT_SHARE = 0.1  # of a training folder without --val_dir, held out for validation
SIZE_SAMPLE = 500  # images whose size is read to find a folder's most common size


@dataclasses.dataclass(frozen=True)
class LabelSource:
    """Where the labels of one folder's images come from: a CSV's rows, or a rule on the file names."""

    rule: files.LabelRule
    csv: Optional[Dict[str, str]] = None  # relative path -> label, when the labels come from a CSV
    csv_path: Optional[str] = None
    lowercase: bool = False

    @classmethod
    def for_folder(cls, folder: str, label_from: str = "prefix", csv_path: Optional[str] = None,
                   lowercase: bool = False) -> "LabelSource":
        """The source for `folder`: `csv_path` if given, else its labels.csv, else its names (see the module)."""
        own = os.path.join(folder, labels_csv.FILE)
        csv_path = csv_path or (own if os.path.isfile(own) else None)
        report = inventory.read_report(folder)
        rule = files.LabelRule.parse(report["label_from"] if report else label_from)
        csv = labels_csv.training_labels(csv_path) if csv_path else None
        return cls(rule, csv, csv_path, lowercase)

    def label(self, relative_path: str) -> Optional[str]:
        """The label of the image at `relative_path` ('/'-separated, from the folder), or None."""
        if self.csv is not None:
            label = self.csv.get(files.normalise_relative(relative_path))
        else:
            label = self.rule.label(relative_path)
        if not label:
            return None
        label = unicodedata.normalize("NFC", label)
        return label.lower() if self.lowercase else label

    def describe(self) -> str:
        if self.csv_path:
            return f"the reviewed rows of {self.csv_path}"
        return f"file names by label_from={self.rule!r}"


@dataclasses.dataclass(frozen=True)
class LabelledFolder:
    """The images under a folder, each with its label or None (unlabelled), and what they imply."""

    path: str
    images: Tuple[str, ...]
    labels: Tuple[Optional[str], ...]
    source: LabelSource

    @classmethod
    def open(cls, path: str, label_from: str = "prefix") -> "LabelledFolder":
        """Reads `path`: every image file under it, labelled by `LabelSource.for_folder`."""
        if not os.path.isdir(path):
            raise FileNotFoundError(f"Image folder not found: {path!r}")
        source = LabelSource.for_folder(path, label_from)
        if source.csv is not None:
            missing = sorted(name for name in source.csv if not os.path.isfile(os.path.join(path, name)))
            if missing:
                raise FileNotFoundError(f"{source.csv_path} lists {len(missing)} images that are not in {path}, "
                                        f"e.g. {missing[0]!r}")
        images = files.list_images(path)
        labels = [source.label(os.path.relpath(image, path)) for image in images]
        return cls(path, tuple(images), tuple(labels), source)

    @property
    def count(self) -> int:
        """Labelled images: the one count that a folder's size tier and step budget go by."""
        return sum(label is not None for label in self.labels)

    def labelled(self) -> Tuple[List[str], List[str]]:
        """(paths, labels) of the labelled images."""
        pairs = [(p, label) for p, label in zip(self.images, self.labels) if label is not None]
        return [p for p, _ in pairs], [label for _, label in pairs]

    def unlabelled(self) -> List[str]:
        return [p for p, label in zip(self.images, self.labels) if label is None]

    def checked(self, vocab) -> Tuple[List[str], List[str]]:
        """`labelled()`, raising a `ValueError` naming the first image whose label `vocab` cannot hold."""
        paths, labels = self.labelled()
        if not paths:
            raise ValueError(f"No labelled images ({', '.join(files.IMAGE_EXTENSIONS)}) in {self.path!r} "
                             f"(labels from {self.source.describe()})")
        for path, label in zip(paths, labels):
            problem = vocab.check(label)
            if problem:
                raise ValueError(f"Bad training label {label!r} in {path}: {problem} (labels from "
                                 f"{self.source.describe()}). Run bin/prepare to validate and split the folder "
                                 "first.")
        return paths, labels

    def holdout(self, seed: int, share: float = HOLDOUT_SHARE):
        """((train paths, labels), (validation paths, labels)): a fixed `share` of the labelled images held out."""
        paths, labels = self.labelled()
        order = np.random.default_rng(seed).permutation(len(paths))
        cut = max(1, int(len(paths) * share))
        pick = lambda indices: ([paths[i] for i in indices], [labels[i] for i in indices])  # noqa: E731
        return pick(order[cut:]), pick(order[:cut])

    def charset(self) -> str:
        """The sorted characters the labels use."""
        return "".join(sorted({c for label in self.labels if label for c in label}))

    def lengths(self) -> Tuple[int, int]:
        lengths = [len(label) for label in self.labels if label]
        return min(lengths), max(lengths)

    def size(self) -> Tuple[int, int]:
        """The most common (width, height) of the images (of the first `SIZE_SAMPLE`)."""
        from PIL import Image

        sizes = collections.Counter()
        for path in self.images[:SIZE_SAMPLE]:
            try:
                with Image.open(path) as image:
                    sizes[image.size] += 1
            except (OSError, ValueError) as error:
                raise ValueError(f"Cannot read the image {path}: {error}. Run bin/prepare to set aside the "
                                 "images that cannot be read.") from None
        return sizes.most_common(1)[0][0]

    def describe(self) -> dict:
        """The task the folder implies: charset, label lengths, the most common image size, the count. For a
        split folder of `bin/prepare`, the charset and lengths it checked the labels against (which may hold
        characters no label happens to use)."""
        if not self.count:
            raise ValueError(f"No image in {self.path!r} has a label (labels from {self.source.describe()})")
        charset, (low, high) = self.charset(), self.lengths()
        report = inventory.read_report(self.path)
        charset_given = False
        if report:
            charset, low, high = report["charset"], report["min_length"], report["max_length"]
            charset_given = bool(report.get("charset_given"))
        width, height = self.size()
        return {"charset": charset, "charset_given": charset_given, "min_length": low, "max_length": high,
                "width": width, "height": height, "images": self.count, "unlabelled": len(self.images) - self.count,
                "source": self.source.describe() + (" and bin/prepare's report" if report else "")}


def labelled_paths(inputs: Sequence[str], label_from: str = "prefix") -> Tuple[List[str], List[Optional[str]]]:
    """(image paths, labels or None) for the folders and files given to `bin/evaluate` or `bin/predict`:
    a folder by `LabelledFolder` (its labels.csv included), a file by its name."""
    paths, labels = [], []
    for item in inputs:
        if os.path.isdir(item):
            folder = LabelledFolder.open(item, label_from)
            paths += folder.images
            labels += folder.labels
        elif os.path.exists(item):
            paths.append(item)
            labels.append(files.LabelRule.parse(label_from).label(item))
        else:
            raise FileNotFoundError(f"No such file or folder: {item!r}")
    if not paths:
        raise ValueError(f"No images ({', '.join(files.IMAGE_EXTENSIONS)}) found in {', '.join(map(repr, inputs))}")
    return paths, labels
