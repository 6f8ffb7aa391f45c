"""The saved model folder: `model.keras` plus `metadata.json`, written atomically, read with checks."""

import datetime
import json
import os
import shutil
import tempfile

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
SAVED_MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "saved_models")


def build_metadata(config, training: dict, metrics: dict) -> dict:
    from kcaptcha import __version__

    return {
        "name": config.name,
        "charset": config.charset,  # in id order: never re-derive it at load time
        "min_length": config.min_length,
        "max_length": config.max_length,
        "width": config.width,
        "height": config.height,
        "model_kind": config.model,
        "config": config.to_dict(),
        "training": training,
        "metrics": metrics,
        "kcaptcha_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def save_model_folder(model, metadata: dict, destination: str) -> str:
    """Writes `destination/` with the model and metadata; an existing folder is replaced only at the end."""
    destination = os.path.abspath(destination)
    parent = os.path.dirname(destination)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(destination)}.", dir=parent)
    try:
        model.save(os.path.join(staging, MODEL_FILE))
        with open(os.path.join(staging, METADATA_FILE), "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=2, sort_keys=True)
        old = None
        if os.path.exists(destination):
            old = staging + ".old"
            os.replace(destination, old)
        os.replace(staging, destination)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def resolve_model_dir(name_or_path: str) -> str:
    """A path to a model folder, or a name under the package's `saved_models/`."""
    if os.path.isdir(name_or_path) or os.sep in name_or_path or name_or_path.startswith("."):
        return name_or_path
    return os.path.join(SAVED_MODELS_DIR, name_or_path)


def read_metadata(model_dir: str) -> dict:
    """Loads and checks `metadata.json`; raises a clear error for a missing or damaged folder."""
    if not os.path.isdir(model_dir):
        available = sorted(os.listdir(SAVED_MODELS_DIR)) if os.path.isdir(SAVED_MODELS_DIR) else []
        raise FileNotFoundError(
            f"Model folder not found: {model_dir!r}. Give a path to a saved model folder or one of the "
            f"shipped names: {', '.join(n for n in available if not n.startswith('.')) or '(none)'}")
    path = os.path.join(model_dir, METADATA_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"Damaged model folder {model_dir!r}: {METADATA_FILE} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"Damaged model folder {model_dir!r}: {METADATA_FILE} is not valid JSON ({error})") from None
    required = ("charset", "min_length", "max_length", "width", "height", "model_kind")
    missing = [key for key in required if key not in metadata]
    if missing:
        raise ValueError(f"Damaged model folder {model_dir!r}: {METADATA_FILE} lacks {', '.join(missing)}")
    if not os.path.isfile(os.path.join(model_dir, MODEL_FILE)):
        raise FileNotFoundError(f"Damaged model folder {model_dir!r}: {MODEL_FILE} is missing")
    return metadata
