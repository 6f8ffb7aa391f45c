"""Model outputs (logits) -> text and confidences, in numpy, the same for every backend.

Every architecture's model ends in logits; the activation is applied here, in float32, so Keras, ONNX
and int8 ONNX give the same confidences (an int8 softmax would cap them at (254/255)^positions).
"""

import dataclasses
import math
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One image's reading: the text, its whole-text confidence and each character's confidence; for a model of
    arithmetic captchas, the answer its text computes to, or why there is none (`kcaptcha.reading.arithmetic`)."""

    text: str
    confidence: float
    char_confidences: Tuple[float, ...]
    answer: Optional[int] = None
    answer_error: Optional[str] = None  # set, with answer None, where an arithmetic reading has no answer

    def to_dict(self) -> dict:
        result = {"text": self.text, "confidence": self.confidence, "char_confidences": list(self.char_confidences)}
        if self.answer is not None or self.answer_error is not None:
            result.update(answer=self.answer, answer_error=self.answer_error)
        return result


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


def with_fallback(readings: Sequence[Prediction], below: float,
                  read_again: Callable[[List[int]], Sequence[Prediction]]) -> List[Prediction]:
    """`readings` with each one whose confidence is under `below` replaced by a second reading.

    How an int8 export with its float32 export as fallback reads (`Recognizer`), and what the export checks
    that pairing on (`kcaptcha.export.onnx.fallback_check`): the int8 model's flips are readings it is unsure of.

    Args:
        readings: the first (int8) readings.
        below: the confidence under which a reading is read again (metadata's `int8_fallback_below`).
        read_again: the indices of those readings -> their second (float32) readings, in the same order;
            called only when there are some, so the second model runs on those images alone.
    """
    readings = list(readings)
    unsure = [i for i, reading in enumerate(readings) if reading.confidence < below]
    if unsure:
        for i, reading in zip(unsure, read_again(unsure)):
            readings[i] = reading
    return readings


def _decode_ctc(logits: np.ndarray, vocab) -> List[Prediction]:
    """CTC decoding of a batch of per-frame logits [batch, frames, len(charset) + 1].

    Greedy first: the best class of each frame, repeats collapsed, blanks (the last class) dropped. A
    character's confidence is the highest probability among the frames that spelled it; the text's is the
    product of its characters' confidences, as for position heads. Not the best path's probability (every
    frame's product, blanks included): that averaged 0.75 on readings the digits model got 100% right, int8
    rounding compounded over every frame moved it by 0.034 on average (this: 0.0001). On alnum's held-out
    captchas this ranks a misread below a right reading 92% of the time.

    A greedy text whose length is outside the model's min_length..max_length cannot be right (most often a
    letter of a run like "nn" lost to a frame the model was unsure of). Such an image is read again as the
    most probable frame path of an allowed length (`best_paths_of_length`); its confidence is scaled by that
    path's probability relative to the greedy path's, so a forced reading ranks as unsure as it is. Where
    no path of an allowed length exists (fewer frames than min_length), the greedy text stays, confidence 0.

    Only each frame's best probability is needed for the greedy reading, 1 / sum(exp(logits - max)), so the
    full softmax is not computed: the same figures as `softmax(logits).max(-1)`, in half the time for one
    image.
    """
    logits = np.asarray(logits, np.float32)
    best_logits = logits.max(axis=-1, keepdims=True)
    best = 1.0 / np.exp(logits - best_logits).sum(axis=-1)
    results = [_collapse(row_ids, row_best, vocab.charset)
               for row_ids, row_best in zip(logits.argmax(axis=-1).tolist(), best.tolist())]  # Python numbers: faster
    redo = [i for i, p in enumerate(results) if not vocab.min_length <= len(p.text) <= vocab.max_length]
    for start in range(0, len(redo), 256):  # the search keeps every frame's choices: a few MB per 256 rows
        _read_again(logits, best, results, redo[start:start + 256], vocab)
    return results


def _read_again(logits, best, results: List[Prediction], redo: List[int], vocab) -> None:
    """Replaces the readings `redo` by the best frame paths of an allowed length (see `_decode_ctc`)."""
    log_probs = log_softmax(logits[redo])
    paths, scores = best_paths_of_length(log_probs, vocab.min_length, vocab.max_length)
    greedy_scores = np.log(best[redo]).sum(axis=-1)
    path_probabilities = np.exp(np.take_along_axis(log_probs, paths[..., None], axis=-1)[..., 0])
    for i, path, score, greedy, probabilities in zip(redo, paths.tolist(), scores, greedy_scores,
                                                      path_probabilities.tolist()):
        if score < IMPOSSIBLE / 2:
            results[i] = Prediction(results[i].text, 0.0, results[i].char_confidences)
            continue
        reading = _collapse(path, probabilities, vocab.charset)
        ratio = math.exp(min(0.0, float(score) - float(greedy)))  # the path's probability / the greedy path's
        results[i] = Prediction(reading.text, reading.confidence * ratio, reading.char_confidences)


def _collapse(ids, probabilities, charset: str) -> Prediction:
    """A frame path's text (repeats collapsed, blanks dropped) and each character's best frame probability."""
    blank = len(charset)
    text, char_confidences, previous = [], [], blank
    for class_id, probability in zip(ids, probabilities):
        if class_id != blank and class_id != previous:
            text.append(charset[class_id])
            char_confidences.append(probability)
        elif class_id != blank:
            char_confidences[-1] = max(char_confidences[-1], probability)
        previous = class_id
    return Prediction("".join(text), math.prod(char_confidences), tuple(char_confidences))


IMPOSSIBLE = -1e9  # the log-probability of a path that cannot be (finite: no inf - inf)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.asarray(logits, np.float32) - np.max(logits, axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def best_paths_of_length(log_probs: np.ndarray, min_length: int, max_length: int):
    """The most probable CTC frame path of each row whose text has min_length..max_length characters.

    Viterbi over the states (characters spelled so far, the last frame's class): a blank frame keeps the
    count, a frame of the last frame's character continues that character, any other character starts the
    next one. `serving_export.read_logits` runs the same steps in TensorFlow.

    Args:
        log_probs: float32 [n, frames, classes] log-probabilities, the last class the blank.
    Returns:
        (paths, scores): int [n, frames] class ids and float32 [n] log-probabilities; a score below
        IMPOSSIBLE / 2 means no path of an allowed length exists.
    """
    n, frames, classes = log_probs.shape
    blank, rows = classes - 1, max_length + 1
    chars = np.arange(blank)
    at, row = np.ogrid[:n, :rows]
    score = np.full((n, rows, classes), IMPOSSIBLE, np.float32)
    score[:, 0, blank] = 0.0  # before the first frame: nothing spelled
    enter = np.full((n, rows, blank), IMPOSSIBLE, np.float32)  # row 0 stays impossible: no character before
    best_before, stayed, entered_from = [], [], []
    for t in range(frames):
        first = score.argmax(axis=-1)  # [n, rows]
        top = score[at, row, first]
        others = score.copy()
        others[at, row, first] = IMPOSSIBLE
        second = others.argmax(axis=-1)
        # Character c starts the k-th character from the best state of k - 1 characters whose class isn't c.
        is_first = first[:, :-1, None] == chars
        enter[:, 1:] = np.where(is_first, others[at, row, second][:, :-1, None], top[:, :-1, None])
        source = np.zeros((n, rows, blank), first.dtype)
        source[:, 1:] = np.where(is_first, second[:, :-1, None], first[:, :-1, None])
        stay = score[:, :, :blank] >= enter
        new = np.empty_like(score)
        new[:, :, blank] = log_probs[:, t, None, blank] + top
        new[:, :, :blank] = log_probs[:, t, None, :blank] + np.where(stay, score[:, :, :blank], enter)
        best_before.append(first)
        stayed.append(stay)
        entered_from.append(source)
        score = new
    ends = score.max(axis=-1)  # [n, rows]
    ends[:, :min_length] = IMPOSSIBLE
    count = ends.argmax(axis=-1)
    at = np.arange(n)  # from here on, one state per row
    symbol = score[at, count].argmax(axis=-1)
    scores = ends[at, count]
    paths = np.empty((n, frames), np.int64)
    for t in reversed(range(frames)):
        paths[:, t] = symbol
        is_blank = symbol == blank
        char = np.minimum(symbol, blank - 1)
        kept = stayed[t][at, count, char]
        previous = np.where(is_blank, best_before[t][at, count],
                            np.where(kept, symbol, entered_from[t][at, count, char]))
        count = np.where(is_blank | kept, count, count - 1)
        symbol = previous
    return paths, scores


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
