"""How readings are scored, in one place: training's validation, saved metadata and bin/evaluate agree.

- whole-image accuracy: the fraction of images whose text is exactly right;
- character accuracy: 1 - (edit distance between truth and reading, summed) / (true characters, summed),
  i.e. one minus the character error rate, at least 0. It counts a missing, extra or wrong character
  once each, so it means the same for per-position and for CTC models, and for any label length.
"""

import collections
from typing import Dict, Iterable, List, Sequence, Tuple


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions turning `a` into `b`."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def image_accuracy(truths: Sequence[str], readings: Sequence[str]) -> float:
    _check(truths, readings)
    return sum(t == r for t, r in zip(truths, readings)) / len(truths) if truths else 0.0


def character_accuracy(truths: Sequence[str], readings: Sequence[str]) -> float:
    _check(truths, readings)
    characters = sum(len(t) for t in truths)
    if not characters:
        return 0.0
    return max(0.0, 1.0 - sum(edit_distance(t, r) for t, r in zip(truths, readings)) / characters)


def per_position_accuracy(truths: Sequence[str], readings: Sequence[str], positions: int) -> List[float]:
    """For each position, the fraction of images whose character there is right (both absent counts as right)."""
    _check(truths, readings)
    right = [0] * positions
    for truth, reading in zip(truths, readings):
        for position in range(positions):
            expected = truth[position] if position < len(truth) else None
            got = reading[position] if position < len(reading) else None
            right[position] += expected == got
    return [count / len(truths) if truths else 0.0 for count in right]


def accuracy_by_length(truths: Sequence[str], readings: Sequence[str]) -> Dict[int, Dict]:
    """{true label length: {"images": n, "image_accuracy": fraction read exactly right}}."""
    _check(truths, readings)
    groups = collections.defaultdict(list)
    for truth, reading in zip(truths, readings):
        groups[len(truth)].append(truth == reading)
    return {length: {"images": len(right), "image_accuracy": sum(right) / len(right)}
            for length, right in sorted(groups.items())}


def confusions(pairs: Iterable[Tuple[str, str]], top: int = 10) -> List[Dict]:
    """The most frequent (true, read) character pairs among same-position disagreements."""
    counts = collections.Counter()
    for truth, reading in pairs:
        for position in range(max(len(truth), len(reading))):
            t = truth[position] if position < len(truth) else ""
            r = reading[position] if position < len(reading) else ""
            if t != r:
                counts[(t, r)] += 1
    return [{"true": t, "predicted": r, "count": n} for (t, r), n in counts.most_common(top)]


def scores(truths: Sequence[str], readings: Sequence[str]) -> Dict[str, float]:
    """{'image_accuracy', 'character_accuracy'}: what training logs, metadata records and evaluate prints."""
    return scores_from_tallies(tallies(truths, readings))


def tallies(truths: Sequence[str], readings: Sequence[str]) -> List[int]:
    """[images, images read right, true characters, edits]: counts that add up across shards of a set."""
    _check(truths, readings)
    return [len(truths), sum(t == r for t, r in zip(truths, readings)), sum(len(t) for t in truths),
            sum(edit_distance(t, r) for t, r in zip(truths, readings))]


def scores_from_tallies(counts: Sequence[float]) -> Dict[str, float]:
    """`scores` from (summed) `tallies`: the same numbers as `scores` of the whole set."""
    images, right, characters, edits = (float(c) for c in counts)
    return {"image_accuracy": right / images if images else 0.0,
            "character_accuracy": max(0.0, 1.0 - edits / characters) if characters else 0.0}


def _check(truths, readings) -> None:
    if len(truths) != len(readings):
        raise ValueError(f"Need one reading per truth. Received: {len(truths)} truths, {len(readings)} readings")
