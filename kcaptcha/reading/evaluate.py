"""Reading folders of images with a `Recognizer`: predictions, accuracy reports, misread images."""

import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from kcaptcha.reading import metrics

BATCH_SIZE = 256


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
            tqdm(total=len(paths), desc="predict", unit="img", file=sys.stderr, disable=None if progress else True) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            loaded = list(pool.map(load, chunk))
            good = [i for i, (pixels, _) in enumerate(loaded) if pixels is not None]
            predictions = recognizer.predict_batch(np.stack([loaded[i][0] for i in good])) if good else []
            by_index = dict(zip(good, predictions))
            for i, path in enumerate(chunk):
                yield path, by_index.get(i), loaded[i][1]
            bar.update(len(chunk))


def evaluate_paths(recognizer, paths: Sequence[str], labels: Sequence[Optional[str]], errors_dir: Optional[str] = None,
                   top_confusions: int = 10, progress: bool = True) -> Dict:
    """Accuracy report of `recognizer` on image files and their `labels` (None: unlabelled, not scored).

    A label the model cannot spell (a character outside its charset, a length outside its range) is scored
    like any other: the image counts as misread.

    Returns:
        A dict: counts, whole-image and character accuracy (`kcaptcha.reading.metrics`), per-position accuracy,
        the most confused (true, predicted) character pairs, images/s and ms/image, misread images (the surest
        reading first: a misread the model is sure of is often a wrong label) and unreadable files.
    """
    labels = dict(zip(paths, labels))
    labelled = [path for path in paths if labels[path] is not None]
    if not labelled:
        raise ValueError("None of the images has a label (from its name by --label_from, or its folder's "
                         "labels.csv)")
    outside = sum(bool(recognizer.vocab.check(labels[path])) for path in labelled)
    started = time.perf_counter()
    results = list(predict_paths(recognizer, labelled, progress=progress))
    seconds = time.perf_counter() - started
    unreadable = [{"path": path, "error": error} for path, _, error in results if error]
    read = [(path, labels[path], prediction) for path, prediction, _ in results if prediction is not None]
    truths, texts = [truth for _, truth, _ in read], [p.text for _, _, p in read]
    misread = [{"path": path, "true": truth, "predicted": p.text, "confidence": round(p.confidence, 4)}
               for path, truth, p in read if truth != p.text]
    misread.sort(key=lambda error: -error["confidence"])  # the surest first: the likeliest wrong labels
    if errors_dir:
        os.makedirs(errors_dir, exist_ok=True)
        for error in misread:
            name = f"{error['true']}_as_{error['predicted'] or 'nothing'}_{os.path.basename(error['path'])}"
            shutil.copy2(error["path"], os.path.join(errors_dir, name))
    return {
        "images": len(paths),
        "labelled": len(labelled),
        "evaluated": len(read),
        "unlabelled": len(paths) - len(labelled),
        "labels_the_model_cannot_spell": outside,
        "unreadable": unreadable,
        **metrics.scores(truths, texts),
        "per_position_accuracy": metrics.per_position_accuracy(truths, texts, recognizer.vocab.max_length),
        "by_length": metrics.accuracy_by_length(truths, texts),
        "confusions": metrics.confusions(((e["true"], e["predicted"]) for e in misread), top_confusions),
        "images_per_second": len(labelled) / seconds if seconds else 0.0,
        "ms_per_image": 1000.0 * seconds / len(labelled),
        "errors": misread,
    }


def format_report(report: Dict, max_errors: int = 20) -> str:
    lines = [
        f"images: {report['images']}  evaluated: {report['evaluated']}  unlabelled: {report['unlabelled']}  "
        f"unreadable: {len(report['unreadable'])}"
        + (f"  labels outside the model's charset or lengths (counted as misread): "
           f"{report['labels_the_model_cannot_spell']}" if report.get("labels_the_model_cannot_spell") else ""),
        f"whole-image accuracy: {report['image_accuracy']:.4f}",
        f"character accuracy:   {report['character_accuracy']:.4f} (1 - character error rate)",
        "per-position accuracy: " + " ".join(f"{v:.4f}" for v in report["per_position_accuracy"]),
        "by label length:       " + "  ".join(f"{length}: {entry['image_accuracy']:.4f} ({entry['images']})"
                                              for length, entry in report["by_length"].items()),
        f"speed: {report['images_per_second']:.1f} images/s, {report['ms_per_image']:.2f} ms/image "
        "(decode + preprocess + model)",
    ]
    if report["confusions"]:
        lines.append("most confused (true -> predicted): " + ", ".join(
            f"{c['true'] or '∅'}->{c['predicted'] or '∅'} x{c['count']}" for c in report["confusions"]))
    if report["errors"]:
        lines.append(f"misread ({len(report['errors'])}), the surest reading first (a misread the model is sure of "
                     "is often a wrong label: look at the image):")
        lines.extend(f"  {e['path']}\ttrue={e['true']}\tpredicted={e['predicted']}\tconfidence={e['confidence']}"
                     for e in report["errors"][:max_errors])
        if len(report["errors"]) > max_errors:
            lines.append(f"  ... and {len(report['errors']) - max_errors} more (see --output_json)")
    for item in report["unreadable"]:
        lines.append(f"unreadable: {item['path']}: {item['error']}")
    return "\n".join(lines)
