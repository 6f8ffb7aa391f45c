"""The saved model folder: `model.keras` plus `metadata.json`, written atomically, never replaced unasked.

Shipped models are package data in `kcaptcha/saved_models/`. A name is looked up in `./saved_models/` of
the working folder first (where `bin/train` saves), then among them.
"""

import datetime
import os
from typing import Optional

from kcaptcha import files, models

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
SHIPPED_MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "saved_models")
SHIPPED = ("digits", "alnum", "general", "arithmetic")
REQUIRED_METADATA = ("charset", "min_length", "max_length", "width", "height", "architecture", "output")


def build_metadata(config, training: dict, metrics: dict) -> dict:
    """Everything a reader needs besides the weights: the task fields, how to decode, and the provenance."""
    from kcaptcha import __version__

    return {
        "name": config.name,
        **config.subset("task"),  # charset in id order: never re-derive it at load time
        "architecture": config.architecture,
        "output": models.get(config.architecture).output,
        "config": config.subset(),
        "training": training,
        "metrics": metrics,
        "kcaptcha_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def without_local_paths(metadata: dict) -> dict:
    """`metadata` as a shipped model records it: no path of the machine it was trained on.

    A shipped model travels with the package, where the absolute paths of its run folder, its data and the
    model it started from mean nothing. Paths inside the repository become relative to its root
    (`runs/digits`), a shipped source model its name (`alnum`); other paths are kept as they are.
    """
    root = os.path.realpath(os.path.dirname(os.path.dirname(SHIPPED_MODELS_DIR)))

    def local(path):
        if not isinstance(path, str) or not os.path.isabs(path):
            return path
        if is_shipped(path):
            return os.path.basename(path)
        real = os.path.realpath(path)
        return files.normalise_relative(os.path.relpath(real, root)) if real.startswith(root + os.sep) else path

    training = dict(metadata.get("training") or {})
    for field in ("run_dir", "data"):
        if field in training:
            training[field] = local(training[field])
    if isinstance(training.get("tuning"), dict):
        training["tuning"] = {**training["tuning"], "tune_dir": local(training["tuning"].get("tune_dir"))}
    if isinstance(training.get("initialized_from"), dict):
        training["initialized_from"] = {**training["initialized_from"],
                                        "model": local(training["initialized_from"].get("model"))}
    config = dict(metadata.get("config") or {})
    for field in ("init_from", "train_dir", "val_dir"):
        if field in config:
            config[field] = local(config[field])
    return {**metadata, "training": training, "config": config}


def check_can_save(destination: str, run_id: Optional[str], overwrite: bool = False) -> None:
    """Refuses to replace a saved model that the run `run_id` did not write, unless `overwrite`."""
    if overwrite or not os.path.isdir(destination) or not os.listdir(destination):
        return
    try:
        metadata = files.read_json(os.path.join(destination, METADATA_FILE))
    except (OSError, ValueError):
        metadata = {}
    if run_id and (metadata.get("training") or {}).get("run_id") == run_id:
        return
    what = "a shipped model" if is_shipped(destination) else "a saved model that this run did not create"
    if not metadata:
        what = "files that are not a model of this run"
    raise ValueError(f"{destination} holds {what}; it is never replaced unasked. Save elsewhere with "
                     "--save_dir (or --name), or pass --overwrite to replace it.")


def is_shipped(model_dir: str) -> bool:
    return os.path.realpath(os.path.dirname(os.path.abspath(model_dir))) == os.path.realpath(SHIPPED_MODELS_DIR) \
        and os.path.basename(os.path.abspath(model_dir)) in SHIPPED


def network_only(model):
    """`model`'s layers and weights without its optimizer: what a saved folder is for (reading, exporting,
    fine-tuning, which starts a fresh optimizer) needs no Adam slots or EMA copy, and they made `model.keras`
    four times as large. A run resumes from its own checkpoints, which keep them."""
    if getattr(model, "optimizer", None) is None:
        return model
    import keras  # here: the runtime install reads saved folders without Keras; only saving needs it

    return keras.Model(model.input, model.output, name=model.name)  # the same structure: one input, not a list


def save_model_folder(model, metadata: dict, destination: str, run_id: Optional[str] = None,
                      overwrite: bool = False) -> str:
    """Writes `destination/` with the model and metadata; an existing folder is replaced only at the end.

    Raises `ValueError` (see `check_can_save`) rather than replace a model another run wrote.
    """
    destination = os.path.abspath(destination)
    check_can_save(destination, run_id, overwrite)
    if run_id:  # what lets the same run replace this folder later
        metadata = {**metadata, "training": {**metadata.get("training", {}), "run_id": run_id}}
    if is_shipped(destination):
        metadata = without_local_paths(metadata)

    def write(staging: str) -> None:
        network_only(model).save(os.path.join(staging, MODEL_FILE))
        files.atomic_write_json(os.path.join(staging, METADATA_FILE), metadata)

    return files.replace_folder(destination, write)


def resolve_model_dir(name_or_path: str) -> str:
    """A path to a model folder, or a name: `./saved_models/<name>` if it exists, else a shipped model."""
    if os.path.isdir(name_or_path) or os.sep in name_or_path or name_or_path.startswith("."):
        return name_or_path
    local = os.path.join("saved_models", name_or_path)
    return local if os.path.isdir(local) else os.path.join(SHIPPED_MODELS_DIR, name_or_path)


def read_metadata(model_dir: str) -> dict:
    """Loads and checks `metadata.json`; raises a clear error for a missing or damaged folder."""
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(
            f"Model folder not found: {model_dir!r}. Give a path to a saved model folder or one of the "
            f"shipped names: {', '.join(name for name in SHIPPED if os.path.isdir(os.path.join(SHIPPED_MODELS_DIR, name)))}")
    path = os.path.join(model_dir, METADATA_FILE)
    try:
        metadata = files.read_json(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"Damaged model folder {model_dir!r}: {METADATA_FILE} is missing") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"Damaged model folder {model_dir!r}: {METADATA_FILE} is not valid JSON ({error})") from None
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ValueError(f"Damaged model folder {model_dir!r}: {METADATA_FILE} lacks {', '.join(missing)}")
    if metadata["output"] not in models.OUTPUTS:
        raise ValueError(f"{model_dir!r} needs a newer kcaptcha: its output {metadata['output']!r} is not one of "
                         f"{', '.join(models.OUTPUTS)}")
    return metadata
