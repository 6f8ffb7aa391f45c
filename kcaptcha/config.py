"""The typed, frozen configuration shared by every kcaptcha command.

Each field is tagged once with its group, and everything that asks "which fields are what" derives the
answer from the tags: a resumed run must match the saved one on `task` and `model` fields; a tuning
search is fingerprinted by every field but the `run` ones; metadata records the `task` fields.
"""

import dataclasses
import json
import os
from typing import Tuple

from kcaptcha import models
from kcaptcha.data import colours, images
from kcaptcha.files import LabelRule
from kcaptcha.reading import arithmetic
from kcaptcha.training import distribute

GROUPS = ("task", "model", "training", "run")
STYLES = ("captcha", "varied", "arithmetic", "colour_decoy", "gif")  # kcaptcha.data.generate draws each


def _field(group: str, default, help_text: str):
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}. Received: group={group!r}")
    return dataclasses.field(default=default, metadata={"group": group, "help": help_text})


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a captcha task, a model and how it is trained.

    Every field has an absl flag of the same name (see `kcaptcha.flags`).
    """

    # What is read: the model's input and output.
    charset: str = _field("task", "0123456789", "Characters that may appear in a label, in id order.")
    min_length: int = _field("task", 4, "Shortest label length.")
    max_length: int = _field("task", 4, "Longest label length (equal to min_length for fixed length).")
    width: int = _field("task", 100, "Model input width in pixels; images are resized to it.")
    height: int = _field("task", 60, "Model input height in pixels; images are resized to it.")
    colour: str = _field("task", "", colours.HELP)
    gif_frames: str = _field("task", "first", images.GIF_FRAMES_HELP)

    # The network.
    architecture: str = _field("model", "ctc", "Architecture: " + "; ".join(
        f"'{a.name}' ({a.description})" for a in models.ARCHITECTURES.values()) + ".")
    conv_filters: Tuple[int, ...] = _field("model", (16, 32, 48, 64), "Filters of each conv block (stage).")
    dropout_rate: float = _field("model", 0.25, "Dropout before the output layer.")
    head_units: int = _field("model", 0, "heads: units of a shared dense layer before the per-position heads "
                             "(0: none).")
    context: str = _field("model", "conv", "ctc: how each frame sees its neighbours: 'conv' (a 1-D convolution), "
                          "'gru' (a bidirectional GRU) or 'none'.")
    extra_blocks: int = _field("model", 0, "ctc: residual blocks added after the last stage, at its width. Each "
                               "starts as the identity (its last batch-norm scale at zero), so a model grown "
                               "from a saved one with --init_from reads as that one did until it trains.")

    # How it learns, and from what.
    batch_size: int = _field("training", 64, "Training batch size.")
    learning_rate: float = _field("training", 2e-3, "Peak learning rate (Adam).")
    max_steps: int = _field("training", 20000, "Upper bound on optimizer steps.")
    max_train_seconds: int = _field("training", 0, "Stop after this many seconds of training in this run "
                                    "(0: no limit).")
    eval_every_steps: int = _field("training", 250, "Validate (and log) every this many steps.")
    target_accuracy: float = _field("training", 0.99, "Stop once validation whole-image accuracy reaches this.")
    patience: int = _field("training", 10, "Stop after this many validations without improvement.")
    min_steps: int = _field("training", 0, "Train at least this many steps before target_accuracy or patience "
                            "may stop the run (a small validation set can read perfectly long before the model "
                            "is done).")
    augment: float = _field("training", 0.5, "Augmentation strength in [0, 1] (0: none).")
    ema_momentum: float = _field("training", 0.99, "Momentum of the moving average of the weights that validation "
                                 "and the saved model use (0: none, the raw weights).")
    train_dir: str = _field("training", "", "Folder of labelled training images ('' for on-the-fly synthetic "
                            "captchas).")
    val_dir: str = _field("training", "", "Folder of labelled validation images ('' for a fixed synthetic set, "
                          "or 10% of --train_dir).")
    label_from: str = _field("training", "prefix", LabelRule.HELP)
    synthetic_mix: float = _field("training", -1.0, "With train_dir: the fraction of each batch that is synthetic "
                                  "captchas of the same charset, lengths and size (-1: by the folder's size tier, which "
                                  "bin/train names when it starts; docs/REAL_DATA.md).")
    unlabelled_dir: str = _field("training", "", "With train_dir: a folder of unlabelled captchas of the same site to "
                                 "self-train on (with the training folder's own unlabelled images, such as the "
                                 "unreviewed rows of its labels.csv).")
    self_training_rounds: int = _field("training", 3, "With unlabelled images: at most this many rounds of training "
                                       "on the pseudo-labels the last model reads surely (0: ignore them).")
    init_from: str = _field("training", "", "Start from this saved model (a name or folder): its architecture, and "
                            "its weights wherever they fit ('' or 'none' to start from scratch).")
    val_size: int = _field("training", 2000, "Number of synthetic validation images when val_dir is empty.")
    pool_size: int = _field("training", 10000, "Synthetic captchas held in memory for training, renewed in the "
                            "background (each is seen a few times, differently augmented).")
    fonts: Tuple[str, ...] = _field("training", (), "TrueType fonts for synthetic captchas (default: the "
                                    "captcha library's; with style=varied, every font on the machine that draws "
                                    "the charset).")
    style: str = _field("training", "captcha", "Look of synthetic captchas: 'captcha' (the captcha library's), "
                        "'varied' (that and others: fonts, backgrounds, colours, spacing, lines, dots, blur, warp), "
                        "'arithmetic' (expressions like 3+8=? in the captcha library's look; charset "
                        "0123456789+-×=?), 'colour_decoy' (the label in the colour of --colour, red without one, "
                        "among decoy characters in other colours) or 'gif' (an animated GIF whose frames each show "
                        "some of the characters; read with --gif_frames=min).")
    seed: int = _field("training", 0, "Seed for synthetic data, shuffling and initialisation.")
    strategy: str = _field("training", "auto", "tf.distribute strategy: 'auto' (mirrored when more than one GPU is "
                           "visible, else one device), 'one_device', 'mirrored' (every GPU here) or 'multi_worker' "
                           "(the machines of TF_CONFIG). batch_size is the global batch, split across the replicas; "
                           "the learning rate stays as given (docs/SCALING.md).")
    mixed_precision: str = _field("training", "float32", "Compute precision: 'float32', 'auto' (mixed_float16 on a "
                                  "GPU, mixed_bfloat16 on a CPU), 'mixed_float16' or 'mixed_bfloat16'. Weights, "
                                  "logits and the loss stay float32.")

    # This run only: where it is saved and how it uses the machine; never changes what is learnt.
    name: str = _field("run", "digits", "Model name: the run folder is runs/<name>, the model saved_models/<name>.")
    data_workers: int = _field("run", 0, "Processes drawing synthetic captchas (0: one per CPU core).")
    jit_compile: bool = _field("run", False, "Compile the training step with XLA (model.compile(jit_compile=True)).")
    checkpoint_every_steps: int = _field("run", 500, "Back up the training state every this many steps "
                                         "(resumed after an interruption).")

    @classmethod
    def field_names(cls, *groups: str) -> Tuple[str, ...]:
        """The names of the fields in `groups` (all fields when none is given), in declaration order."""
        unknown = [g for g in groups if g not in GROUPS]
        if unknown:
            raise ValueError(f"groups must be among {GROUPS}. Received: {unknown}")
        return tuple(f.name for f in dataclasses.fields(cls) if not groups or f.metadata["group"] in groups)

    @property
    def fixed_length(self) -> bool:
        return self.min_length == self.max_length

    @property
    def uses_synthetic_data(self) -> bool:
        return not self.train_dir

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def subset(self, *groups: str) -> dict:
        """{field: value} for the fields in `groups`, JSON-ready (tuples as lists)."""
        return {name: _jsonable(getattr(self, name)) for name in self.field_names(*groups)}

    def validate(self) -> "Config":
        """Checks every field; raises `ValueError` naming the field and the value received."""
        problems = [*self._task_problems(), *self._model_problems(), *self._training_problems()]
        if not self.name or any(c in self.name for c in "/\\") or self.name.startswith("."):
            problems.append(f"name must be a plain folder name. Received: name={self.name!r}")
        for field_name in ("checkpoint_every_steps",):
            if getattr(self, field_name) < 1:
                problems.append(f"{field_name} must be at least 1. Received: {field_name}={getattr(self, field_name)}")
        if self.data_workers < 0:
            problems.append(f"data_workers must be >= 0. Received: data_workers={self.data_workers}")
        if problems:
            raise ValueError("Invalid configuration: " + "; ".join(problems))
        return self

    def _task_problems(self):
        if not self.charset:
            yield "charset must not be empty."
        elif len(set(self.charset)) != len(self.charset):
            dupes = sorted({c for c in self.charset if self.charset.count(c) > 1})
            yield f"charset has repeated characters {''.join(dupes)!r}. Received: charset={self.charset!r}"
        elif any(c.isspace() or c == "_" for c in self.charset):
            yield f"charset may not contain whitespace or '_'. Received: charset={self.charset!r}"
        if self.min_length < 1:
            yield f"min_length must be at least 1. Received: min_length={self.min_length}"
        if self.max_length < self.min_length:
            yield (f"max_length must be >= min_length. Received: min_length={self.min_length}, "
                   f"max_length={self.max_length}")
        if self.max_length > 32:
            yield f"max_length must be at most 32. Received: max_length={self.max_length}"
        for field_name in ("width", "height"):
            value = getattr(self, field_name)
            if not 16 <= value <= 1024:
                yield f"{field_name} must be between 16 and 1024 pixels. Received: {field_name}={value}"
        try:
            images.Preprocessing(self.colour, self.gif_frames)
        except ValueError as error:
            yield str(error)

    def _model_problems(self):
        if self.architecture not in models.ARCHITECTURES:
            yield (f"architecture must be one of {', '.join(models.ARCHITECTURES)}. "
                   f"Received: architecture={self.architecture!r}")
        if not self.conv_filters or any(f < 1 for f in self.conv_filters):
            yield f"conv_filters must be positive integers. Received: conv_filters={self.conv_filters}"
        elif len(self.conv_filters) > 6:
            yield f"conv_filters allows at most 6 blocks. Received: conv_filters={self.conv_filters}"
        if not 0.0 <= self.dropout_rate < 1.0:
            yield f"dropout_rate must be in [0, 1). Received: dropout_rate={self.dropout_rate}"
        if self.head_units < 0:
            yield f"head_units must be >= 0. Received: head_units={self.head_units}"
        if self.context not in ("conv", "gru", "none"):
            yield f"context must be one of conv, gru, none. Received: context={self.context!r}"
        if not 0 <= self.extra_blocks <= 4:
            yield f"extra_blocks must be between 0 and 4. Received: extra_blocks={self.extra_blocks}"
        elif self.extra_blocks and self.architecture != "ctc":
            yield (f"extra_blocks applies to the ctc architecture only. Received: extra_blocks={self.extra_blocks}, "
                   f"architecture={self.architecture!r}")

    def _training_problems(self):
        for field_name in ("batch_size", "max_steps", "eval_every_steps", "patience", "val_size", "pool_size"):
            value = getattr(self, field_name)
            if value < 1:
                yield f"{field_name} must be at least 1. Received: {field_name}={value}"
        if self.max_train_seconds < 0:
            yield f"max_train_seconds must be >= 0. Received: max_train_seconds={self.max_train_seconds}"
        if not 0.0 < self.learning_rate < 1.0:
            yield f"learning_rate must be in (0, 1). Received: learning_rate={self.learning_rate}"
        if self.min_steps < 0:
            yield f"min_steps must be >= 0. Received: min_steps={self.min_steps}"
        if not 0.0 < self.target_accuracy <= 1.0:
            yield f"target_accuracy must be in (0, 1]. Received: target_accuracy={self.target_accuracy}"
        if not 0.0 <= self.augment <= 1.0:
            yield f"augment must be in [0, 1]. Received: augment={self.augment}"
        if not 0.0 <= self.ema_momentum < 1.0:
            yield f"ema_momentum must be in [0, 1). Received: ema_momentum={self.ema_momentum}"
        for field_name in ("train_dir", "val_dir"):
            value = getattr(self, field_name)
            if value and not os.path.isdir(value):
                yield f"{field_name} is not a folder: {value!r}"
        if not (self.synthetic_mix == -1.0 or 0.0 <= self.synthetic_mix < 1.0):
            yield f"synthetic_mix must be -1 (auto) or in [0, 1). Received: synthetic_mix={self.synthetic_mix}"
        if self.val_dir and not self.train_dir:
            yield "val_dir is set but train_dir is not; give both or neither."
        if self.unlabelled_dir and not self.train_dir:
            yield "unlabelled_dir needs train_dir: self-training starts from labelled images."
        if self.unlabelled_dir and not os.path.isdir(self.unlabelled_dir):
            yield f"unlabelled_dir is not a folder: {self.unlabelled_dir!r}"
        if self.unlabelled_dir and self.self_training_rounds and self.strategy == "multi_worker":
            yield ("unlabelled_dir is not read under strategy=multi_worker: self-training runs on one machine. "
                   "Train there without --strategy=multi_worker, or without --unlabelled_dir.")
        if not 0 <= self.self_training_rounds <= 10:
            yield f"self_training_rounds must be between 0 and 10. Received: {self.self_training_rounds}"
        try:
            LabelRule.parse(self.label_from)
        except ValueError as error:
            yield str(error)
        if self.strategy not in distribute.STRATEGIES:
            yield (f"strategy must be one of {', '.join(distribute.STRATEGIES)}. "
                   f"Received: strategy={self.strategy!r}")
        if self.mixed_precision not in distribute.PRECISIONS:
            yield (f"mixed_precision must be one of {', '.join(distribute.PRECISIONS)}. "
                   f"Received: mixed_precision={self.mixed_precision!r}")
        if self.style not in STYLES:
            yield f"style must be one of {', '.join(STYLES)}. Received: style={self.style!r}"
        elif self.style == "arithmetic" and set(arithmetic.CHARSET) - set(self.charset):
            yield (f"style=arithmetic draws {arithmetic.CHARSET!r}, so the charset must hold those characters. "
                   f"Received: charset={self.charset!r}")
        if self.colour and self.style != "colour_decoy" and self.uses_synthetic_data:
            yield (f"colour={self.colour!r} keeps only the pixels of that colour, and synthetic captchas in "
                   f"style={self.style!r} draw their characters in others: train with --style=colour_decoy, or "
                   "on a folder of your captchas (--train_dir)")
        for font in self.fonts:
            if not os.path.isfile(font):
                yield f"font file not found: {font!r}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.subset(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"Unknown Config fields: {', '.join(unknown)}")
        return cls(**{key: tuple(value) if isinstance(known[key].default, tuple) else value
                      for key, value in values.items()})

    @classmethod
    def from_json(cls, text: str) -> "Config":
        return cls.from_dict(json.loads(text))

    def to_flagfile(self) -> str:
        """The config as flagfile lines that `bin/train --flagfile=...` accepts."""
        lines = []
        for name, value in self.subset().items():
            if isinstance(value, bool):
                lines.append(f"--{'' if value else 'no'}{name}")
            elif isinstance(value, list):
                lines.append(f"--{name}={','.join(str(v) for v in value)}")
            else:
                lines.append(f"--{name}={value}")
        return "\n".join(lines) + "\n"


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value
