"""Charset <-> ids: label encoding and decoding for per-position heads."""

from typing import Iterable, List, Sequence, Tuple

import numpy as np


class Vocab:
    """Maps labels to fixed-size id rows and back.

    Labels shorter than `max_length` are padded with a blank id (`len(charset)`), which exists only
    when lengths vary; the model predicts the blank at unused positions.
    """

    def __init__(self, charset: str, min_length: int, max_length: int):
        self.charset = charset
        self.min_length = min_length
        self.max_length = max_length
        self.blank_id = len(charset) if min_length != max_length else None
        self.num_classes = len(charset) + (1 if self.blank_id is not None else 0)
        self._ids = {c: i for i, c in enumerate(charset)}

    @classmethod
    def from_config(cls, config) -> "Vocab":
        return cls(config.charset, config.min_length, config.max_length)

    def check(self, label: str) -> str:
        """Returns an error message for a label this vocab cannot encode, or '' if it is fine."""
        bad = sorted({c for c in label if c not in self._ids})
        if bad:
            return f"characters {''.join(bad)!r} are not in the charset {self.charset!r}"
        if not self.min_length <= len(label) <= self.max_length:
            allowed = (str(self.min_length) if self.min_length == self.max_length
                       else f"{self.min_length}-{self.max_length}")
            return f"length {len(label)} is not the allowed {allowed}"
        return ""

    def encode(self, label: str) -> np.ndarray:
        problem = self.check(label)
        if problem:
            raise ValueError(f"Cannot encode label {label!r}: {problem}.")
        ids = [self._ids[c] for c in label]
        ids += [self.blank_id] * (self.max_length - len(ids))
        return np.asarray(ids, dtype=np.int32)

    def encode_many(self, labels: Iterable[str]) -> np.ndarray:
        labels = list(labels)
        if not labels:
            return np.zeros((0, self.max_length), dtype=np.int32)
        return np.stack([self.encode(label) for label in labels])

    def restrict(self, charset: str, ctc: bool) -> Tuple["Vocab", List[int]]:
        """The vocab that reads only `charset`'s characters, and the output classes (logit columns) it keeps.

        The characters keep the model's order; the blank class stays (the last, for CTC always). A character the
        model has no class for is a `ValueError` naming it.

        Args:
            charset: the characters to read, in any order (repeats count once).
            ctc: the model's output is CTC's (a blank class after the characters even at a fixed length).
        """
        if not isinstance(charset, str) or not charset:
            raise ValueError(f"charset must be a non-empty string of the characters to read. Received: charset={charset!r}")
        unknown = "".join(sorted({c for c in charset if c not in self._ids}))
        if unknown:
            raise ValueError(f"This model cannot read {unknown!r}: it reads only {self.charset!r}. "
                             f"Received: charset={charset!r}")
        columns = sorted({self._ids[c] for c in charset})
        vocab = Vocab("".join(self.charset[i] for i in columns), self.min_length, self.max_length)
        if ctc or self.blank_id is not None:
            columns.append(len(self.charset))
        return vocab, columns

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.charset[i] for i in ids if i != self.blank_id and 0 <= i < len(self.charset))

    def decode_many(self, rows) -> List[str]:
        return [self.decode(row) for row in np.asarray(rows)]
