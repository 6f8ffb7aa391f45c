"""Starting from a saved model (`bin/train --init_from=NAME_OR_PATH`): what it decides, and its weights.

- The new model takes the source's architecture and model fields (`Config`'s `model` group) unless they
  are given (`kcaptcha.training.resolve`). The learning rate is the run's own (`--learning_rate`, 0.002
  by default, after the usual warm-up): a quarter of it fine-tuned `alnum` on 200-250 real captchas into
  models that misread more (10 of 208 and 12 of 1000 test images, against 0 and 5; CHANGELOG.md, 2026-12-01).
- Every layer whose name and weight shapes match is copied: the convolutions whatever the image size.
- The output layer is mapped character by character: a character the source knows (or knows in the other
  case, `A` from `a`) keeps its weights, a new one starts fresh, so a different charset re-learns only
  what it must. Any other layer that does not fit (the frame layer for another image height) starts fresh.
"""

from typing import Dict, Optional

import numpy as np

from kcaptcha.export import saving
from kcaptcha.training.resolve import base_dir


def copy_weights(model, init_from: str, charset: str) -> Dict:
    """Copies the source model's weights into `model` where they fit; returns what was copied and what not."""
    from kcaptcha.export.onnx import load_keras_model

    model_dir = base_dir(init_from)
    source = load_keras_model(model_dir)
    source_charset = saving.read_metadata(model_dir)["charset"]
    copied, mapped, fresh = [], [], []
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        try:
            source_weights = source.get_layer(layer.name).get_weights()
        except ValueError:
            fresh.append(layer.name)
            continue
        if _is_class_layer(layer.name):
            layer.set_weights(map_classes(weights, source_weights, charset, source_charset))
            mapped.append(layer.name)
        elif [w.shape for w in weights] == [w.shape for w in source_weights]:
            layer.set_weights(source_weights)
            copied.append(layer.name)
        else:
            fresh.append(layer.name)
    return {"model": model_dir, "charset": source_charset, "layers_copied": len(copied),
            "layers_mapped_by_character": mapped, "layers_fresh": fresh}


def _is_class_layer(name: str) -> bool:
    return name == "logits" or (name.startswith("char_") and not name.endswith("_row"))


def map_classes(weights, source_weights, charset: str, source_charset: str):
    """The output layer's columns (last axis: characters, then a blank if any) taken from the source by
    character; columns of characters the source lacks keep their fresh initialisation."""
    new = [np.array(w) for w in weights]
    if [w.shape[:-1] for w in new] != [w.shape[:-1] for w in source_weights]:
        return new  # the features feeding it differ: nothing to map
    for column, source_column in _class_pairs(new[0].shape[-1], charset, source_weights[0].shape[-1],
                                              source_charset):
        for target, origin in zip(new, source_weights):
            target[..., column] = origin[..., source_column]
    return new


def _class_pairs(classes: int, charset: str, source_classes: int, source_charset: str):
    index = {c: i for i, c in enumerate(source_charset)}
    for column in range(classes):
        if column < len(charset):
            char = charset[column]
            found: Optional[int] = index.get(char, index.get(char.lower(), index.get(char.upper())))
        else:  # the blank
            found = source_classes - 1 if source_classes > len(source_charset) else None
        if found is not None:
            yield column, found
