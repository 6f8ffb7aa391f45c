"""The typed, frozen configuration shared by every kcaptcha command."""

import dataclasses
import json
import os
from typing import Tuple

MODEL_KINDS = ("default", "legacy")


def _field(default, help_text, **kwargs):
    return dataclasses.field(default=default, metadata={"help": help_text, **kwargs})


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a captcha task, a model and how it is trained.

    Every field has an absl flag of the same name (see `kcaptcha.flags`).
    """

    # The task.
    name: str = _field("digits", "Model name; the model is saved as saved_models/<name>.")
    charset: str = _field("0123456789", "Characters that may appear in a label, in id order.")
    min_length: int = _field(4, "Shortest label length.")
    max_length: int = _field(4, "Longest label length (equal to min_length for fixed length).")
    width: int = _field(100, "Model input width in pixels; images are resized to it.")
    height: int = _field(60, "Model input height in pixels; images are resized to it.")
    fonts: Tuple[str, ...] = _field((), "TrueType fonts for synthetic captchas (default: the captcha library's).")

    # The model.
    model: str = _field("default", "Architecture: 'default' (fast CNN, softmax heads) or 'legacy' (the parent's).")
    conv_filters: Tuple[int, ...] = _field((24, 48, 96, 128), "Filters of each conv block of the default model.")
    dropout_rate: float = _field(0.25, "Dropout before the per-character heads.")
    head_units: int = _field(0, "Units of a shared dense layer before the heads (0: none).")

    # Training.
    batch_size: int = _field(128, "Training batch size.")
    learning_rate: float = _field(2e-3, "Peak learning rate (Adam).")
    max_steps: int = _field(20000, "Upper bound on optimizer steps.")
    max_train_seconds: int = _field(0, "Stop after this many seconds of training in this run (0: no limit).")
    eval_every_steps: int = _field(500, "Validate (and log) every this many steps.")
    target_accuracy: float = _field(0.99, "Stop once validation whole-image accuracy reaches this.")
    patience: int = _field(10, "Stop after this many validations without improvement.")
    augment: float = _field(0.5, "Augmentation strength in [0, 1] (0: none).")
    checkpoint_every_steps: int = _field(1000, "Write a resumable checkpoint every this many steps.")
    keep_checkpoints: int = _field(3, "How many checkpoints to keep.")

    # Data.
    train_dir: str = _field("", "Folder of labelled training images ('' for on-the-fly synthetic captchas).")
    val_dir: str = _field("", "Folder of labelled validation images ('' for a fixed synthetic set).")
    val_size: int = _field(2000, "Number of synthetic validation images when val_dir is empty.")
    seed: int = _field(0, "Seed for synthetic data, shuffling and initialisation.")
    workers: int = _field(0, "Processes generating synthetic captchas (0: one per CPU core).")

    @property
    def fixed_length(self) -> bool:
        return self.min_length == self.max_length

    @property
    def uses_synthetic_data(self) -> bool:
        return not self.train_dir

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def validate(self) -> "Config":
        """Checks every field; raises `ValueError` naming the field and the value received."""
        problems = []
        if not self.name or any(c in self.name for c in "/\\") or self.name.startswith("."):
            problems.append(f"name must be a plain folder name. Received: name={self.name!r}")
        if not self.charset:
            problems.append("charset must not be empty.")
        elif len(set(self.charset)) != len(self.charset):
            dupes = sorted({c for c in self.charset if self.charset.count(c) > 1})
            problems.append(f"charset has repeated characters {''.join(dupes)!r}. Received: charset={self.charset!r}")
        elif any(c.isspace() or c == "_" for c in self.charset):
            problems.append(f"charset may not contain whitespace or '_'. Received: charset={self.charset!r}")
        if self.min_length < 1:
            problems.append(f"min_length must be at least 1. Received: min_length={self.min_length}")
        if self.max_length < self.min_length:
            problems.append(
                f"max_length must be >= min_length. Received: min_length={self.min_length}, max_length={self.max_length}"
            )
        if self.max_length > 32:
            problems.append(f"max_length must be at most 32. Received: max_length={self.max_length}")
        for field_name in ("width", "height"):
            value = getattr(self, field_name)
            if not 16 <= value <= 1024:
                problems.append(f"{field_name} must be between 16 and 1024 pixels. Received: {field_name}={value}")
        for font in self.fonts:
            if not os.path.isfile(font):
                problems.append(f"font file not found: {font!r}")
        if self.model not in MODEL_KINDS:
            problems.append(f"model must be one of {', '.join(MODEL_KINDS)}. Received: model={self.model!r}")
        if not self.conv_filters or any(f < 1 for f in self.conv_filters):
            problems.append(f"conv_filters must be positive integers. Received: conv_filters={self.conv_filters}")
        elif len(self.conv_filters) > 6:
            problems.append(f"conv_filters allows at most 6 blocks. Received: conv_filters={self.conv_filters}")
        if not 0.0 <= self.dropout_rate < 1.0:
            problems.append(f"dropout_rate must be in [0, 1). Received: dropout_rate={self.dropout_rate}")
        if self.head_units < 0:
            problems.append(f"head_units must be >= 0. Received: head_units={self.head_units}")
        for field_name in ("batch_size", "max_steps", "eval_every_steps", "checkpoint_every_steps",
                           "keep_checkpoints", "patience", "val_size"):
            value = getattr(self, field_name)
            if value < 1:
                problems.append(f"{field_name} must be at least 1. Received: {field_name}={value}")
        if self.max_train_seconds < 0:
            problems.append(f"max_train_seconds must be >= 0. Received: max_train_seconds={self.max_train_seconds}")
        if not 0.0 < self.learning_rate < 1.0:
            problems.append(f"learning_rate must be in (0, 1). Received: learning_rate={self.learning_rate}")
        if not 0.0 < self.target_accuracy <= 1.0:
            problems.append(f"target_accuracy must be in (0, 1]. Received: target_accuracy={self.target_accuracy}")
        if not 0.0 <= self.augment <= 1.0:
            problems.append(f"augment must be in [0, 1]. Received: augment={self.augment}")
        if self.workers < 0:
            problems.append(f"workers must be >= 0. Received: workers={self.workers}")
        for field_name in ("train_dir", "val_dir"):
            value = getattr(self, field_name)
            if value and not os.path.isdir(value):
                problems.append(f"{field_name} is not a folder: {value!r}")
        if self.val_dir and not self.train_dir:
            problems.append("val_dir is set but train_dir is not; give both or neither.")
        if problems:
            raise ValueError("Invalid configuration:\n  " + "\n  ".join(problems))
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"Unknown Config fields: {', '.join(unknown)}")
        converted = {}
        for key, value in values.items():
            if isinstance(known[key].default, tuple):
                value = tuple(value)
            converted[key] = value
        return cls(**converted)

    @classmethod
    def from_json(cls, text: str) -> "Config":
        return cls.from_dict(json.loads(text))

    def to_flagfile(self) -> str:
        """The config as flagfile lines that `bin/train --flagfile=...` accepts."""
        lines = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool):
                lines.append(f"--{'' if value else 'no'}{field.name}")
            elif isinstance(value, tuple):
                lines.append(f"--{field.name}={','.join(str(v) for v in value)}")
            else:
                lines.append(f"--{field.name}={value}")
        return "\n".join(lines) + "\n"
