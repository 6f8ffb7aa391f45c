"""Self-training: a site gives captchas away for free, labels cost a person's time, so train on both.

`self_train` first trains on the labelled images as `train()` does (round 0). Each later round reads the
unlabelled images with the last round's model and keeps those it reads surely and consistently: the same
text, of a length and charset the model may read, as it is and in `COPIES` slightly warped copies
(`kcaptcha.reading.tta`), with a confidence of at least `MIN_CONFIDENCE`. It then fine-tunes the last model
on the labelled images plus those pseudo-labelled ones, validating on the same held-out labelled images
every round, and goes on while validation does not get worse, for at most `self_training_rounds` rounds.
The saved model records how many pseudo-labels each round used.

The unlabelled images are those of `--unlabelled_dir` and the unlabelled images of the training folder
itself (the unreviewed rows of a `bin/collect` folder's labels.csv). Each round has its run folder,
`<model_dir>/round<k>`, so an interrupted self-training resumes at its round.
"""

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from kcaptcha import files
from kcaptcha.data.folder import LabelledFolder
from kcaptcha.reading.vocab import Vocab

COPIES = 4  # warped copies that must read the same text as the image itself
MIN_CONFIDENCE = 0.9
BATCH = 256


def unlabelled_images(config) -> List[str]:
    """The images self-training may pseudo-label: `unlabelled_dir`'s and the training folder's unlabelled."""
    found = []
    if config.unlabelled_dir:
        found += files.list_images(config.unlabelled_dir)
    if config.train_dir:
        found += LabelledFolder.open(config.train_dir, config.label_from).unlabelled()
    if found and config.strategy == "multi_worker":  # every worker would pseudo-label into the same folders
        print(f"Not self-training on the {len(found)} unlabelled images of {config.train_dir}: self-training "
              "runs on one machine (train without --strategy=multi_worker to use them).", flush=True)
        return []
    return sorted(set(found))


def pseudo_labels(model_dir: str, paths: Sequence[str], config, copies: int = COPIES,
                  min_confidence: float = MIN_CONFIDENCE) -> Tuple[List[str], List[str]]:
    """(paths, texts) of the images `model_dir` reads surely and alike in `copies` warped copies."""
    from kcaptcha.reading import tta
    from kcaptcha.reading.recognizer import Recognizer

    recognizer = Recognizer(model_dir, backend="keras", tta=0)  # it votes over its own copies
    vocab = Vocab.from_config(config)
    warps = tta.warps(copies, recognizer.width, recognizer.height)
    kept_paths, kept_texts = [], []
    for start in range(0, len(paths), BATCH):
        chunk, pixels = [], []
        for path in paths[start:start + BATCH]:
            try:
                pixels.append(recognizer.preprocess(path))
                chunk.append(path)
            except (OSError, ValueError):  # an image that cannot be read gets no pseudo-label
                continue
        if not chunk:
            continue
        batch = np.stack(pixels)
        readings = [recognizer.read(batch)] + [recognizer.read(tta.warp(batch, w)) for w in warps]
        for index, path in enumerate(chunk):
            first = readings[0][index]
            if (first.text and first.confidence >= min_confidence and not vocab.check(first.text)
                    and all(r[index].text == first.text for r in readings[1:])):
                kept_paths.append(path)
                kept_texts.append(first.text)
    return kept_paths, kept_texts


def _link_folder(folder: str, paths: Sequence[str], labels: Sequence[str], prefix: str) -> None:
    """`folder/<label>_<prefix><n>.<ext>` links to `paths`: a folder whose names carry the labels."""
    os.makedirs(folder, exist_ok=True)
    for index, (path, label) in enumerate(zip(paths, labels)):
        link = os.path.join(folder, f"{label}_{prefix}{index}{os.path.splitext(path)[1].lower()}")
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(path), link)


def _score(summary: dict) -> Tuple[float, float]:
    metrics = summary.get("metrics") or {}
    return metrics.get("val_image_accuracy", 0.0), metrics.get("val_character_accuracy", 0.0)


def self_train(config, model_dir: str, unlabelled: Sequence[str], train_once, fresh: bool = False,
               save_dir: Optional[str] = None, overwrite: bool = False, verbose: int = 1) -> dict:
    """Trains `config` (resolved) on its labelled folder and, round by round, on pseudo-labelled `unlabelled`.

    Args:
        train_once: `kcaptcha.training.train`'s one run (`(config, model_dir, fresh, save_dir, overwrite,
            verbose) -> summary`), used for every round.

    Returns:
        The best round's summary, with `self_training`: each round's pseudo-label count and validation.
    """
    model_dir = os.path.abspath(model_dir)
    with files.folder_in_use(model_dir, "self-training"):  # one machine: multi_worker never gets here
        return _self_train_in(config, model_dir, unlabelled, train_once, fresh, save_dir, overwrite, verbose)


def _self_train_in(config, model_dir: str, unlabelled: Sequence[str], train_once, fresh: bool,
                   save_dir: Optional[str], overwrite: bool, verbose: int) -> dict:
    """`self_train` in its folder, which it holds."""
    if fresh:
        files.clear_folder(model_dir)
    folder = LabelledFolder.open(config.train_dir, config.label_from)
    folder.checked(Vocab.from_config(config))
    if config.val_dir:
        val_dir = config.val_dir
        train_paths, train_labels = folder.labelled()
    else:  # one hold-out for every round, so that rounds are compared on the same images
        (train_paths, train_labels), (val_paths, val_labels) = folder.holdout(config.seed)
        val_dir = os.path.join(model_dir, "val")
        _link_folder(val_dir, val_paths, val_labels, "v")
    first_dir = os.path.join(model_dir, "round0", "train")
    _link_folder(first_dir, train_paths, train_labels, "l")
    base = config.replace(train_dir=first_dir, val_dir=val_dir, unlabelled_dir="")
    rounds = []
    best = None
    for k in range(config.self_training_rounds + 1):
        round_dir = os.path.join(model_dir, f"round{k}")
        round_config = base
        pseudo = 0
        if k:
            source = rounds[-1]["model"]
            paths, texts = pseudo_labels(source, unlabelled, config)
            pseudo = len(paths)
            train_dir = os.path.join(round_dir, "train")
            _link_folder(train_dir, train_paths, train_labels, "l")
            _link_folder(train_dir, paths, texts, "p")
            round_config = base.replace(train_dir=train_dir, init_from=source)
            if verbose:
                print(f"Self-training round {k}: {pseudo} of {len(unlabelled)} unlabelled images read surely "
                      f"and alike in {COPIES} warped copies, trained on with the {len(train_paths)} labelled",
                      flush=True)
        summary = train_once(round_config, os.path.join(round_dir, "run"), save_dir=os.path.join(round_dir, "model"),
                             verbose=verbose)
        rounds.append({"round": k, "pseudo_labels": pseudo, "model": summary["saved_to"],
                       "val_image_accuracy": _score(summary)[0], "val_character_accuracy": _score(summary)[1]})
        if best is not None and _score(summary) < _score(best):
            if verbose:
                print(f"Self-training stops: round {k} validates worse than round {rounds[-2]['round']}", flush=True)
            break
        best = summary
    chosen = next(r for r in reversed(rounds) if r["model"] == best["saved_to"])
    result = {**best, "run_dir": model_dir, "self_training": {"rounds": rounds, "kept_round": chosen["round"],
                                        "pseudo_labels": chosen["pseudo_labels"], "unlabelled": len(unlabelled)}}
    if save_dir:
        result["saved_to"] = _save(chosen["model"], result["self_training"], save_dir, overwrite, model_dir)
    return result


def _save(round_model: str, record: dict, save_dir: str, overwrite: bool, model_dir: str) -> str:
    """The kept round's model, saved to `save_dir` with the self-training record in its metadata."""
    from kcaptcha.export import saving
    from kcaptcha.export.onnx import load_keras_model

    metadata = saving.read_metadata(round_model)
    metadata["training"] = {**metadata.get("training", {}), "self_training": record}
    run_id = files.read_json(os.path.join(model_dir, "round0", "run", "run.json"))["run_id"]
    return saving.save_model_folder(load_keras_model(round_model), metadata, save_dir, run_id, overwrite)
