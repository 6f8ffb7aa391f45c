"""Model outputs (logits) -> text and confidences, in numpy, the same for every backend.

Every architecture's model ends in logits; the activation is applied here, in float32, so Keras, ONNX
and int8 ONNX give the same confidences (an int8 softmax would cap them at (254/255)^positions).
"""

import dataclasses
import math
from typing import List, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One image's reading: the text, its whole-text confidence and each character's confidence."""

    text: str
    confidence: float
    char_confidences: Tuple[float, ...]

    def to_dict(self) -> dict:
        return {"text": self.text, "confidence": self.confidence, "char_confidences": list(self.char_confidences)}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.asarray(logits, np.float32) - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float32)))


def decode(logits: np.ndarray, output: str, vocab) -> List[Prediction]:
    """Readings of a batch of logits [batch, positions or time steps, classes].

    Args:
        output: how the architecture's logits are read: 'softmax' or 'sigmoid' (one row per character
            position; a blank id at unused positions) or 'ctc' (one row per frame; the last class blank).
        vocab: the model's `Vocab`.
    """
    if output == "softmax":
        return _decode_positions(softmax(logits), vocab)
    if output == "sigmoid":
        return _decode_positions(sigmoid(logits), vocab)
    if output == "ctc":
        return _decode_ctc(logits, vocab)
    raise ValueError(f"output must be 'softmax', 'sigmoid' or 'ctc'. Received: output={output!r}")


def _decode_ctc(logits: np.ndarray, vocab) -> List[Prediction]:
    """Greedy CTC decoding of a batch of per-frame logits [batch, frames, len(charset) + 1].

    The best class of each frame, repeats collapsed, blanks (the last class) dropped. A character's
    confidence is the highest probability among the frames that spelled it; the text's is the product of
    its characters' confidences, as for position heads. Not the best path's probability (every frame's
    product, blanks included): that averaged 0.75 on readings the digits model got 100% right, int8
    rounding compounded over every frame moved it by 0.034 on average (this: 0.0001). On alnum's held-out
    captchas this ranks a misread below a right reading 92% of the time. A text whose length is outside
    the model's min_length..max_length gets confidence 0: it cannot be right.

    Only each frame's best probability is needed, 1 / sum(exp(logits - max)), so the full softmax is not
    computed: the same figures as `softmax(logits).max(-1)`, in half the time for one image.
    """
    logits = np.asarray(logits, np.float32)
    best_logits = logits.max(axis=-1, keepdims=True)
    best = 1.0 / np.exp(logits - best_logits).sum(axis=-1)
    blank, charset = len(vocab.charset), vocab.charset
    results = []
    for row_ids, row_best in zip(logits.argmax(axis=-1).tolist(), best.tolist()):  # Python numbers: faster
        text, char_confidences, previous = [], [], blank
        for class_id, probability in zip(row_ids, row_best):
            if class_id != blank and class_id != previous:
                text.append(charset[class_id])
                char_confidences.append(probability)
            elif class_id != blank:
                char_confidences[-1] = max(char_confidences[-1], probability)
            previous = class_id
        confidence = math.prod(char_confidences) if vocab.min_length <= len(text) <= vocab.max_length else 0.0
        results.append(Prediction("".join(text), confidence, tuple(char_confidences)))
    return results


def _decode_positions(probabilities: np.ndarray, vocab) -> List[Prediction]:
    ids = probabilities.argmax(axis=-1)
    best = probabilities.max(axis=-1)
    results = []
    for row_ids, row_best in zip(ids, best):
        keep = [i for i, c in enumerate(row_ids) if c != vocab.blank_id]
        results.append(Prediction(
            text=vocab.decode(row_ids),
            confidence=float(np.prod(row_best)),
            char_confidences=tuple(float(row_best[i]) for i in keep),
        ))
    return results
