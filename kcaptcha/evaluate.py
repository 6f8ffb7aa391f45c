"""Reading folders of images with a `Recognizer`: predictions, accuracy reports, misread images."""

import collections
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from kcaptcha.files import IMAGE_EXTENSIONS, label_from_filename

BATCH_SIZE = 256


def collect_inputs(inputs: Sequence[str]) -> List[str]:
    """Files named directly plus image files found recursively under folders, in a stable order."""
    found = []
    for item in inputs:
        if os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs.sort()
                found.extend(os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.exists(item):
            found.append(item)
        else:
            raise FileNotFoundError(f"No such file or folder: {item!r}")
    if not found:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in {', '.join(map(repr, inputs))}")
    return found


def label_for(path: str, vocab) -> Optional[str]:
    """The label a file name carries (`<label>_...` or a bare label stem), if the model could read it."""
    label = label_from_filename(path)
    return label if label and not vocab.check(label) else None


def predict_paths(recognizer, paths: Sequence[str], batch_size: int = BATCH_SIZE,
                  progress: bool = True) -> Iterator[Tuple[str, object, Optional[str]]]:
    """Yields (path, Prediction or None, error message or None) for every path, in order."""
    from tqdm import tqdm

    def load(path):
        try:
            return recognizer.preprocess(path), None
        except (OSError, ValueError) as error:
            return None, str(error)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, \
            tqdm(total=len(paths), desc="predict", unit="img", file=sys.stderr, disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            loaded = list(pool.map(load, chunk))
            good = [i for i, (pixels, _) in enumerate(loaded) if pixels is not None]
            predictions = recognizer.predict_batch(np.stack([loaded[i][0] for i in good])) if good else []
            by_index = dict(zip(good, predictions))
            for i, path in enumerate(chunk):
                yield path, by_index.get(i), loaded[i][1]
            bar.update(len(chunk))


def _confusions(pairs: Iterable[Tuple[str, str]], top: int) -> List[dict]:
    counts = collections.Counter()
    for truth, predicted in pairs:
        for position in range(max(len(truth), len(predicted))):
            t = truth[position] if position < len(truth) else ""
            p = predicted[position] if position < len(predicted) else ""
            if t != p:
                counts[(t, p)] += 1
    return [{"true": t, "predicted": p, "count": n} for (t, p), n in counts.most_common(top)]


def evaluate_paths(recognizer, paths: Sequence[str], errors_dir: Optional[str] = None, top_confusions: int = 10,
                   progress: bool = True) -> Dict:
    """Accuracy report of `recognizer` on labelled image files.

    Returns:
        A dict: counts, whole-image and character accuracy, per-position accuracy, the most confused
        (true, predicted) character pairs, images/s and ms/image, misread images and unreadable files.
    """
    labels = {path: label_for(path, recognizer.vocab) for path in paths}
    labelled = [path for path in paths if labels[path] is not None]
    if not labelled:
        raise ValueError("None of the images has a label in its name (<label>_<anything>.<ext>) that fits "
                         f"the model's charset {recognizer.vocab.charset!r} and length")
    started = time.perf_counter()
    results = list(predict_paths(recognizer, labelled, progress=progress))
    seconds = time.perf_counter() - started
    unreadable = [{"path": path, "error": error} for path, _, error in results if error]
    read = [(path, labels[path], prediction.text, prediction.confidence)
            for path, prediction, error in results if prediction is not None]
    positions = recognizer.vocab.max_length
    position_right = np.zeros(positions)
    chars_right = chars_total = 0
    misread = []
    for path, truth, text, confidence in read:
        for position in range(positions):
            right = position < len(truth) and position < len(text) and truth[position] == text[position]
            blank_right = position >= len(truth) and position >= len(text)
            position_right[position] += right or blank_right
        chars_right += sum(1 for a, b in zip(truth, text) if a == b)
        chars_total += max(len(truth), len(text))
        if truth != text:
            misread.append({"path": path, "true": truth, "predicted": text, "confidence": round(confidence, 4)})
    if errors_dir:
        os.makedirs(errors_dir, exist_ok=True)
        for error in misread:
            name = f"{error['true']}_as_{error['predicted'] or 'nothing'}_{os.path.basename(error['path'])}"
            shutil.copy2(error["path"], os.path.join(errors_dir, name))
    count = len(read)
    return {
        "images": len(paths),
        "labelled": len(labelled),
        "evaluated": count,
        "unlabelled": len(paths) - len(labelled),
        "unreadable": unreadable,
        "image_accuracy": (count - len(misread)) / count if count else 0.0,
        "character_accuracy": chars_right / chars_total if chars_total else 0.0,
        "per_position_accuracy": [float(v) / count if count else 0.0 for v in position_right],
        "confusions": _confusions(((e["true"], e["predicted"]) for e in misread), top_confusions),
        "images_per_second": len(labelled) / seconds if seconds else 0.0,
        "ms_per_image": 1000.0 * seconds / len(labelled),
        "errors": misread,
    }


def format_report(report: Dict, max_errors: int = 20) -> str:
    lines = [
        f"images: {report['images']}  evaluated: {report['evaluated']}  unlabelled: {report['unlabelled']}  "
        f"unreadable: {len(report['unreadable'])}",
        f"whole-image accuracy: {report['image_accuracy']:.4f}",
        f"character accuracy:   {report['character_accuracy']:.4f}",
        "per-position accuracy: " + " ".join(f"{v:.4f}" for v in report["per_position_accuracy"]),
        f"speed: {report['images_per_second']:.1f} images/s, {report['ms_per_image']:.2f} ms/image "
        "(decode + preprocess + model)",
    ]
    if report["confusions"]:
        lines.append("most confused (true -> predicted): " + ", ".join(
            f"{c['true'] or '∅'}->{c['predicted'] or '∅'} x{c['count']}" for c in report["confusions"]))
    if report["errors"]:
        lines.append(f"misread ({len(report['errors'])}):")
        lines.extend(f"  {e['path']}\ttrue={e['true']}\tpredicted={e['predicted']}\tconfidence={e['confidence']}"
                     for e in report["errors"][:max_errors])
        if len(report["errors"]) > max_errors:
            lines.append(f"  ... and {len(report['errors']) - max_errors} more (see --output_json)")
    for item in report["unreadable"]:
        lines.append(f"unreadable: {item['path']}: {item['error']}")
    return "\n".join(lines)
