"""`build_model(config)`: functional Keras models mapping a grayscale image to [positions, classes]."""

import keras
from keras import layers

from kcaptcha.vocab import Vocab


@keras.saving.register_keras_serializable(package="kcaptcha")
def character_accuracy(y_true, y_pred):
    """Fraction of character positions predicted right."""
    y_true = keras.ops.cast(y_true, "int32")
    predicted = keras.ops.cast(keras.ops.argmax(y_pred, axis=-1), "int32")
    return keras.ops.mean(keras.ops.cast(keras.ops.equal(y_true, predicted), "float32"), axis=-1)


@keras.saving.register_keras_serializable(package="kcaptcha")
def image_accuracy(y_true, y_pred):
    """Fraction of images with every position right (the metric that matters for a captcha)."""
    y_true = keras.ops.cast(y_true, "int32")
    predicted = keras.ops.cast(keras.ops.argmax(y_pred, axis=-1), "int32")
    return keras.ops.cast(keras.ops.all(keras.ops.equal(y_true, predicted), axis=-1), "float32")


@keras.saving.register_keras_serializable(package="kcaptcha")
class OneHotBinaryCrossentropy(keras.losses.Loss):
    """The parent's loss: sigmoid cross-entropy of every (position, class) against one-hot labels."""

    def __init__(self, num_classes, name="one_hot_binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes

    def call(self, y_true, y_pred):
        one_hot = keras.ops.one_hot(keras.ops.cast(y_true, "int32"), self.num_classes)
        return keras.ops.mean(keras.losses.binary_crossentropy(one_hot, y_pred), axis=-1)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def apply_conv_block(x, filters, strides=1, name=None):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def apply_heads(features, num_positions, num_classes, activation, name_prefix="char"):
    """One dense head per character position, stacked to [batch, positions, classes]."""
    heads = []
    for position in range(num_positions):
        logits = layers.Dense(num_classes, name=f"{name_prefix}_{position}")(features)
        heads.append(layers.Reshape((1, num_classes), name=f"{name_prefix}_{position}_row")(logits))
    stacked = heads[0] if num_positions == 1 else layers.Concatenate(axis=1, name="positions")(heads)
    return layers.Activation(activation, name="probabilities")(stacked)


def build_default_model(config) -> keras.Model:
    """A CNN designed for 2-core CPUs: a strided first block, then conv + pool blocks, then heads."""
    vocab = Vocab.from_config(config)
    inputs = keras.Input((config.height, config.width, 1), name="image")
    x = apply_conv_block(inputs, config.conv_filters[0], strides=2, name="block0")
    for index, filters in enumerate(config.conv_filters[1:], start=1):
        x = apply_conv_block(x, filters, name=f"block{index}")
        pool = (2, 2) if x.shape[1] >= 4 else (1, 2)
        if x.shape[2] >= 2 * config.max_length:
            x = layers.MaxPooling2D(pool, name=f"block{index}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(config.dropout_rate, name="dropout")(x)
    if config.head_units:
        x = layers.Dense(config.head_units, activation="relu", name="shared_dense")(x)
        x = layers.Dropout(config.dropout_rate, name="shared_dropout")(x)
    outputs = apply_heads(x, config.max_length, vocab.num_classes, "softmax")
    return keras.Model(inputs, outputs, name="kcaptcha_default")


def build_legacy_model(config) -> keras.Model:
    """The parent project's network: 3 conv + max-pool + dropout blocks, dense 1024, sigmoid outputs."""
    vocab = Vocab.from_config(config)
    keep_prob = 0.75
    inputs = keras.Input((config.height, config.width, 1), name="image")
    x = inputs
    for index, filters in enumerate((32, 64, 128)):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{index}")(x)
        x = layers.MaxPooling2D(2, padding="same", name=f"pool{index}")(x)
        x = layers.Dropout(1 - keep_prob, name=f"dropout{index}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(1024, activation="relu", name="dense")(x)
    x = layers.Dropout(1 - keep_prob, name="dense_dropout")(x)
    x = layers.Dense(config.max_length * vocab.num_classes, name="logits")(x)
    x = layers.Reshape((config.max_length, vocab.num_classes), name="positions")(x)
    outputs = layers.Activation("sigmoid", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="kcaptcha_legacy")


def build_model(config) -> keras.Model:
    """The model `config.model` names, uncompiled."""
    if config.model == "legacy":
        return build_legacy_model(config)
    return build_default_model(config)


def compile_model(model: keras.Model, config, learning_rate=None) -> keras.Model:
    """Compiles with the loss and optimizer each kind trains with and both accuracy metrics."""
    vocab = Vocab.from_config(config)
    if config.model == "legacy":
        loss = OneHotBinaryCrossentropy(vocab.num_classes)
        optimizer = keras.optimizers.Adam(1e-4)  # the parent's fixed learning rate
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        optimizer = keras.optimizers.Adam(learning_rate if learning_rate is not None else config.learning_rate)
    model.compile(optimizer=optimizer, loss=loss, metrics=[character_accuracy, image_accuracy])
    return model
