"""`heads`: a CNN designed for 2-core CPUs, then one softmax head per character position.

Each position is read by its own dense layer from the flattened feature map, so a character is tied to
where it usually sits. Variable length is a blank class that the heads predict at unused positions.
"""

import keras
from keras import layers

from kcaptcha.models.common import adam, conv_block
from kcaptcha.reading.vocab import Vocab

REFERENCE_WIDTHS = (24, 48, 96, 128, 160)  # conv filters at width_multiplier=1.0 (Config's default stack)


def build(config) -> keras.Model:
    """A strided first block, conv + pool blocks, dropout, then a dense head per position (logits)."""
    inputs = keras.Input((config.height, config.width, 1), name="image")
    x = conv_block(inputs, config.conv_filters[0], strides=2, name="block0")
    for index, filters in enumerate(config.conv_filters[1:], start=1):
        x = conv_block(x, filters, name=f"block{index}")
        pool = (2, 2) if x.shape[1] >= 4 else (1, 2)
        if x.shape[2] >= 2 * config.max_length:
            x = layers.MaxPooling2D(pool, name=f"block{index}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(config.dropout_rate, name="dropout")(x)
    if config.head_units:
        x = layers.Dense(config.head_units, activation="relu", name="shared_dense")(x)
        x = layers.Dropout(config.dropout_rate, name="shared_dropout")(x)
    classes = Vocab.from_config(config).num_classes
    heads = [layers.Reshape((1, classes), dtype="float32", name=f"char_{position}_row")(
        layers.Dense(classes, dtype="float32", name=f"char_{position}")(x)) for position in range(config.max_length)]
    logits = heads[0] if len(heads) == 1 else layers.Concatenate(axis=1, dtype="float32", name="logits")(heads)
    return keras.Model(inputs, logits, name="kcaptcha_heads")


def loss(config):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def optimizer(config):
    return adam(config)


def search_space(hp, config) -> dict:
    """The conv stack's depth and width, dropout and the shared dense layer."""
    conv_blocks = hp.Int("conv_blocks", 2, 5, default=4)
    width_multiplier = hp.Choice("width_multiplier", [0.5, 0.75, 1.0, 1.5], default=1.0)
    dropout_rate = hp.Float("dropout_rate", 0.0, 0.5, step=0.05, default=0.25)
    head_units = hp.Choice("head_units", [0, 128, 256, 512], default=0)
    conv_filters = tuple(max(4, round(width * width_multiplier)) for width in REFERENCE_WIDTHS[:conv_blocks])
    return {"conv_filters": conv_filters, "dropout_rate": round(dropout_rate, 4), "head_units": head_units}
