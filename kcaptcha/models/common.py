"""Parts that several architectures share: a conv block and the warm-up + cosine learning-rate schedule."""

import keras
from keras import layers


def conv_block(x, filters: int, strides=1, name: str = "block"):
    """3x3 convolution, batch norm, ReLU."""
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def warmup_cosine(config):
    """Linear warm-up to `learning_rate`, then cosine decay to 2% of it at `max_steps`."""
    warmup = min(500, max(1, config.max_steps // 10))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate * 0.1,
        decay_steps=max(1, config.max_steps - warmup),
        alpha=0.02,
        warmup_target=config.learning_rate,
        warmup_steps=warmup,
    )
