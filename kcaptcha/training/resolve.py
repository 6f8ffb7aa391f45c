"""`resolve(config, given)`: a run's settings from what the user gave, the base model and the training folder.

Every entry point calls it (`train()`, `tune()`, `bin/train`, `bin/tune`), so a setting is worked out once
and the same way everywhere; the run's config.json and the saved model record the resolved values.

- `init_from`: the base model's architecture and model fields, where not given (`none` means scratch).
- `train_dir`: the task (charset, label lengths, image size) from the folder, where not given, and the
  training settings of the folder's size tier (`Tier`), chosen by the one count of labelled images.
"""

import dataclasses
import math
import os
from typing import Iterable, List, Optional, Tuple

from kcaptcha import files
from kcaptcha.config import Config
from kcaptcha.data import images
from kcaptcha.data.folder import LabelledFolder
from kcaptcha.export import saving

MAX_MODEL_HEIGHT = 64  # taller images are scaled down to this height, keeping their aspect ratio
NO_BASE = "none"  # --init_from=none: train from scratch
# What a training folder may decide when not given (the base model among them: the default one).
FROM_FOLDER = frozenset(("init_from", "charset", "min_length", "max_length", "width", "height", "style",
                         "eval_every_steps", "patience", "max_steps", "min_steps", "target_accuracy",
                         "synthetic_mix"))
DEFAULT_BASE = "general"  # the shipped base pretrained on real captchas: where a folder's training starts


@dataclasses.dataclass(frozen=True)
class Tier:
    """The training settings for a folder of up to `max_images` labelled images (docs/REAL_DATA.md).

    `max_steps` is the budget; within it a run stops on a plateau (`callbacks.PlateauStop`: `patience`
    validations with neither a better accuracy nor a lower running-average validation loss), not before
    `min_steps`. A small folder's budget is twice what it needs on most sites, for the sites whose model is
    still improving at 1,200 steps (tiny images); the plateau ends the others early.
    `synthetic_share`: none up to 500 images (from 200 captcha_images_v2 images, half of every batch
    synthetic left two of five runs on CTC's blank plateau for all 1200 steps), then half, a quarter, none.
    """

    name: str
    max_images: float
    max_steps: int
    min_steps: int
    synthetic_share: float
    eval_every_steps: int
    patience: int


TIERS = (
    Tier("few", 500, 2400, 600, 0.0, 100, 5),
    Tier("some", 1000, 3000, 600, 0.5, 100, 5),
    Tier("many", 5000, 3000, 0, 0.25, 100, 20),
    Tier("lots", math.inf, 6000, 0, 0.0, 250, 10),
)


def tier_for(images: int) -> Tier:
    """The tier of a folder of `images` labelled images."""
    return next(tier for tier in TIERS if images <= tier.max_images)


def default_given(config: Config) -> frozenset:
    """The fields of `config` that differ from `Config()`'s: for the Python API, where no flags say what
    was given, a field left at its default may be chosen from the folder and the base model."""
    defaults = Config()
    return frozenset(name for name in Config.field_names() if getattr(config, name) != getattr(defaults, name))


def resolve(config: Config, given: Optional[Iterable[str]] = None) -> Tuple[Config, List[str]]:
    """The run `config` describes, with what the base model and the training folder imply where not `given`.

    Args:
        config: the settings so far (flags or a `Config`).
        given: the fields the user set; the others may be chosen. None: those that differ from the defaults.

    Returns:
        (the resolved, validated `Config`, notes for people saying what was chosen and why).

    Raises:
        ValueError: a setting or folder that cannot be trained on, naming it.
        FileNotFoundError: a missing base model or folder.
    """
    given = default_given(config) if given is None else frozenset(given)
    notes = []
    folder = None
    if config.train_dir and not FROM_FOLDER <= given:  # a resolved config is not read from its folder again
        if not os.path.isdir(config.train_dir):
            raise ValueError(f"train_dir is not a folder: {config.train_dir!r}")
        folder = LabelledFolder.open(config.train_dir, config.label_from)
    if config.init_from == NO_BASE:
        config = config.replace(init_from="")
    elif not config.init_from and "init_from" not in given and folder is not None:
        config, note = _default_base(config, folder)
        notes += [note] if note else []
    if config.init_from:
        config, note = _from_base(config, given)
        notes.append(note)
    if folder is not None:
        config, folder_notes = _from_folder(config, given, folder)
        notes += folder_notes
    if folder is not None and config.unlabelled_dir and config.self_training_rounds:
        count = len(files.list_images(config.unlabelled_dir))
        notes.append(f"{count} unlabelled images in {config.unlabelled_dir}: self-training, at most "
                     f"{config.self_training_rounds} rounds")
    return config.validate(), notes


def _default_base(config: Config, folder: LabelledFolder) -> Tuple[Config, str]:
    """`config` starting from the shipped `DEFAULT_BASE` when it can spell every label of the folder."""
    model_dir = os.path.join(saving.SHIPPED_MODELS_DIR, DEFAULT_BASE)
    if not os.path.isdir(model_dir) or folder.count == 0:
        return config, ""
    base_charset = saving.read_metadata(model_dir)["charset"]
    if fitted_charset(base_charset, folder.charset()) is None:
        return config, (f"Training from scratch: the labels hold characters the shipped {DEFAULT_BASE} model "
                        f"cannot read ({folder.charset()!r} against {base_charset!r})")
    return config.replace(init_from=DEFAULT_BASE), (
        f"Starting from the shipped {DEFAULT_BASE} model, pretrained on real captchas (--init_from=none: from "
        "scratch)")


def fitted_charset(base: str, used: str) -> Optional[str]:
    """The base model's charset in the case the labels use (`A` for `a` when the labels hold only `A`), or
    None when the labels hold a character the base lacks in either case."""
    fitted = "".join(c.swapcase() if c not in used and c.swapcase() in used else c for c in base)
    return fitted if set(used) <= set(fitted) else None


def _from_base(config: Config, given: frozenset) -> Tuple[Config, str]:
    """`config` with the base model's model fields, colour selection and GIF frame blending where not `given`."""
    metadata = saving.read_metadata(base_dir(config.init_from))
    changes = {}
    if "config" in metadata:
        source = Config.from_dict(metadata["config"])
        changes = {name: getattr(source, name) for name in Config.field_names("model") if name not in given}
    # The base's weights were learnt on pixels after its colour selection and frame blending: keep them.
    for name, value in dataclasses.asdict(images.Preprocessing.from_metadata(metadata)).items():
        if name not in given and value != getattr(Config, name):
            changes[name] = value
    shown = ", ".join(f"{k}={v}" for k, v in changes.items()) or "no model field taken"
    return config.replace(**changes), f"Starting from {config.init_from} ({metadata.get('architecture')}): {shown}"


def base_dir(init_from: str) -> str:
    """The folder of the base model `init_from` (a name or a path); a clear error when there is none."""
    model_dir = saving.resolve_model_dir(init_from)
    saving.read_metadata(model_dir)  # a clear error for a missing or damaged folder
    return os.path.abspath(model_dir)


def _from_folder(config: Config, given: frozenset, folder: LabelledFolder) -> Tuple[Config, List[str]]:
    """`config` with the task and the size tier's training settings that the training folder implies.

    The charset, when not given, is the base model's (in the labels' case), widened by any character the
    labels add: never narrowed to the characters a few labels happen to hold, which makes a model that can
    never read the others. Without a base model, it is the folder's (`bin/prepare`'s, else its labels').
    The image size, when not given, is the base model's own, so that every layer of it fits (at the folder's
    size the frame layer starts fresh: 200 labels of one site read 86.6% at its size, 96.4% at the base's);
    without a base model, the folder's most common size, scaled down to `MAX_MODEL_HEIGHT` if taller.
    """
    found = folder.describe()
    base = saving.read_metadata(base_dir(config.init_from)) if config.init_from else None
    if base and not found.get("charset_given"):
        used = folder.charset()
        fitted = fitted_charset(base["charset"], used)
        found["charset"] = fitted if fitted is not None else base["charset"] + "".join(
            c for c in used if c not in base["charset"])
    width, height = found["width"], found["height"]
    scaled = ""
    if base and base.get("width") and base.get("height"):  # every layer of the base fits, the frame layer too
        width, height = base["width"], base["height"]
        scaled = (f" (the base model's input: the images are {found['width']}x{found['height']}, read resized "
                  f"to {width}x{height})") if (width, height) != (found["width"], found["height"]) else ""
    elif height > MAX_MODEL_HEIGHT:
        width, height = max(16, round(width * MAX_MODEL_HEIGHT / height / 4) * 4), MAX_MODEL_HEIGHT
        scaled = f" (the images are {found['width']}x{found['height']}, read scaled down to {width}x{height})"
    task = {"charset": found["charset"], "min_length": found["min_length"], "max_length": found["max_length"],
            "width": width, "height": height}
    tier = tier_for(folder.count)
    max_steps = config.max_steps if "max_steps" in given else tier.max_steps
    # Synthetic captchas mixed in must survive the colour selection: the label drawn in the chosen colour.
    training = {"style": "colour_decoy" if config.colour else "varied", "eval_every_steps": tier.eval_every_steps,
                "patience": tier.patience, "max_steps": tier.max_steps, "min_steps": min(tier.min_steps, max_steps),
                "target_accuracy": 1.0, "synthetic_mix": tier.synthetic_share}
    task_changes = {k: v for k, v in task.items() if k not in given}
    training_changes = {k: v for k, v in training.items() if k not in given}
    if "synthetic_mix" in given and config.synthetic_mix < 0:  # -1 given explicitly: by the folder's size too
        training_changes["synthetic_mix"] = tier.synthetic_share
    notes = []
    unlabelled = f", {found['unlabelled']} unlabelled" if found["unlabelled"] else ""
    head = f"{folder.count} labelled images in {config.train_dir}{unlabelled} (labels from {found['source']})"
    if task_changes:
        notes.append(f"{head}; chose " + ", ".join(f"{k}={v!r}" for k, v in task_changes.items()) + scaled)
    else:
        notes.append(head)
    if training_changes:
        notes.append(f"For a folder of {folder.count} labelled images (tier '{tier.name}', up to "
                     f"{tier.max_images:g}), chose " + ", ".join(f"{k}={v}" for k, v in training_changes.items()))
    return config.replace(**task_changes, **training_changes), notes


def previous_run_id(model_dir: str, fresh: bool = False) -> Optional[str]:
    """The id of the run in `model_dir` (which may replace the model it saved), or None (none, or `fresh`)."""
    path = os.path.join(model_dir, "run.json")
    return None if fresh or not os.path.exists(path) else files.read_json(path)["run_id"]
