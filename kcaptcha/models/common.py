"""Parts that several architectures share: a conv block and the warm-up + cosine learning-rate schedule."""

import keras
from keras import layers


def conv_block(x, filters: int, strides=1, name: str = "block"):
    """3x3 convolution, batch norm, ReLU."""
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def adam(config):
    """Adam on the warm-up + cosine schedule, keeping an exponential moving average of the weights.

    Validation and the saved model use the averaged weights (`keras.callbacks.SwapEMAWeights`, added by
    `kcaptcha.training.train.fit`): they do not swing with the last steps' noise while the learning rate is high.
    """
    use_ema = config.ema_momentum > 0
    return keras.optimizers.Adam(warmup_cosine(config), use_ema=use_ema,
                                 ema_momentum=config.ema_momentum if use_ema else 0.99)


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
