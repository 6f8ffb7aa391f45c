"""`legacy`: the parent project's network and loss, kept to measure ourselves against.

Three conv + max-pool + dropout blocks, a 1024-unit dense layer and sigmoid outputs trained with
per-(position, class) binary cross-entropy at the parent's fixed learning rate of 1e-4.
"""

import keras
from keras import layers

from kcaptcha.reading.vocab import Vocab

KEEP_PROB = 0.75  # the parent's dropout keep probability


def build(config) -> keras.Model:
    inputs = keras.Input((config.height, config.width, 1), name="image")
    x = inputs
    for index, filters in enumerate((32, 64, 128)):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{index}")(x)
        x = layers.MaxPooling2D(2, padding="same", name=f"pool{index}")(x)
        x = layers.Dropout(1 - KEEP_PROB, name=f"dropout{index}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(1024, activation="relu", name="dense")(x)
    x = layers.Dropout(1 - KEEP_PROB, name="dense_dropout")(x)
    classes = Vocab.from_config(config).num_classes
    x = layers.Dense(config.max_length * classes, dtype="float32", name="dense_logits")(x)
    logits = layers.Reshape((config.max_length, classes), dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name="kcaptcha_legacy")


@keras.saving.register_keras_serializable(package="kcaptcha")
class OneHotBinaryCrossentropy(keras.losses.Loss):
    """The parent's loss: sigmoid cross-entropy of every (position, class) against one-hot labels."""

    def __init__(self, num_classes, name="one_hot_binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes

    def call(self, y_true, y_pred):
        one_hot = keras.ops.one_hot(keras.ops.cast(y_true, "int32"), self.num_classes)
        return keras.ops.mean(keras.losses.binary_crossentropy(one_hot, y_pred, from_logits=True), axis=-1)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def loss(config):
    return OneHotBinaryCrossentropy(Vocab.from_config(config).num_classes)


def optimizer(config):
    return keras.optimizers.Adam(1e-4)  # the parent's fixed learning rate
