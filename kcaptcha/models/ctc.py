"""`ctc`: a residual CNN that reads the image as a sequence of columns, trained with CTC.

The backbone halves the height at every stage and the width only twice, so the last feature map is a
row of `width / 4` frames (`width / 2` when the labels are long for the image). Each frame's column of
features becomes one vector, a light 1-D convolution (or GRU) adds context from its neighbours, and a
dense layer gives per-frame logits over the charset plus a CTC blank (the last class). CTC needs no
alignment between frames and characters, so any label length in min_length..max_length is read
without a padding class; decoding collapses repeats and drops blanks (`kcaptcha.reading.decoding`).
"""

import keras
from keras import layers

from kcaptcha.models.common import adam, conv_block

CONTEXTS = ("conv", "gru", "none")
REFERENCE_WIDTHS = (16, 32, 48, 64, 96)  # conv filters at width_multiplier=1.0


def frames(config) -> int:
    """How many frames (time steps) the model reads: width / 4, or width / 2 for long labels."""
    return config.width // 4 if config.width // 4 >= 2 * config.max_length + 1 else config.width // 2


def residual_block(x, filters: int, strides, name: str, identity_at_start: bool = False):
    """Two 3x3 convolutions with batch norm, added to a (projected) shortcut.

    With `identity_at_start` (and no projection) the second batch norm's scale starts at zero, so the block
    passes its (non-negative, post-ReLU) input through unchanged until training moves that scale.
    """
    shortcut = x
    y = conv_block(x, filters, strides=strides, name=f"{name}_a")
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_b_conv")(y)
    scale = "zeros" if identity_at_start else "ones"
    y = layers.BatchNormalization(gamma_initializer=scale, name=f"{name}_b_bn")(y)
    if strides != (1, 1) or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False, name=f"{name}_proj_conv")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    return layers.ReLU(name=f"{name}_relu")(layers.Add(name=f"{name}_add")([y, shortcut]))


def build(config) -> keras.Model:
    inputs = keras.Input((config.height, config.width, 1), name="image")
    halve_width_twice = frames(config) == config.width // 4
    x = conv_block(inputs, config.conv_filters[0], strides=2, name="stem")
    for index, filters in enumerate(config.conv_filters[1:], start=1):
        height_stride = 2 if x.shape[1] >= 2 else 1
        width_stride = 2 if index == 1 and halve_width_twice else 1
        x = residual_block(x, filters, (height_stride, width_stride), name=f"stage{index}")
    for index in range(1, config.extra_blocks + 1):
        x = residual_block(x, x.shape[-1], (1, 1), name=f"extra{index}", identity_at_start=True)
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    x = layers.Permute((2, 1, 3), name="columns")(x)  # [batch, frames, height, channels]
    x = layers.Reshape((width, height * channels), name="frames")(x)
    units = config.conv_filters[-1]
    x = layers.Dense(units, use_bias=False, name="frame_dense")(x)
    x = layers.BatchNormalization(name="frame_bn")(x)
    x = layers.ReLU(name="frame_relu")(x)
    if config.context == "conv":
        y = layers.Conv1D(units, 3, padding="same", use_bias=False, name="context_conv")(x)
        y = layers.BatchNormalization(name="context_bn")(y)
        x = layers.ReLU(name="context_relu")(layers.Add(name="context_add")([x, y]))
    elif config.context == "gru":
        x = layers.Bidirectional(layers.GRU(units // 2, return_sequences=True), name="context_gru")(x)
    x = layers.Dropout(config.dropout_rate, name="dropout")(x)
    # The last class is the CTC blank. float32 under --mixed_precision too: the loss needs the range.
    logits = layers.Dense(len(config.charset) + 1, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name="kcaptcha_ctc")


@keras.saving.register_keras_serializable(package="kcaptcha")
class CTCLoss(keras.losses.Loss):
    """CTC loss of label ids (padded with `blank_id`) against per-frame logits whose last class is blank."""

    def __init__(self, blank_id: int, name: str = "ctc", **kwargs):
        super().__init__(name=name, **kwargs)
        self.blank_id = blank_id

    def call(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, "int32")
        label_length = keras.ops.sum(keras.ops.cast(keras.ops.not_equal(y_true, self.blank_id), "int32"), axis=-1)
        shape = keras.ops.shape(y_pred)
        output_length = keras.ops.full((shape[0],), shape[1], dtype="int32")
        return keras.ops.ctc_loss(y_true, y_pred, label_length, output_length, mask_index=self.blank_id)

    def get_config(self):
        return {**super().get_config(), "blank_id": self.blank_id}


def loss(config):
    return CTCLoss(blank_id=len(config.charset))


def optimizer(config):
    return adam(config)


def search_space(hp, config) -> dict:
    """The residual stack's depth and width, blocks after its last stage, the sequence context and dropout."""
    conv_blocks = hp.Int("ctc_conv_blocks", 3, 5, default=4)
    # Depth at the last stage's small resolution: one block gained half a point on alnum for 1.3x the time.
    extra_blocks = hp.Int("ctc_extra_blocks", 0, 2, default=0)
    width_multiplier = hp.Choice("ctc_width_multiplier", [0.5, 1.0, 1.5, 2.0], default=1.0)
    context = hp.Choice("context", list(CONTEXTS), default="conv")
    dropout_rate = hp.Float("ctc_dropout_rate", 0.0, 0.5, step=0.05, default=0.25)
    conv_filters = tuple(max(4, round(width * width_multiplier)) for width in REFERENCE_WIDTHS[:conv_blocks])
    return {"conv_filters": conv_filters, "extra_blocks": extra_blocks, "context": context,
            "dropout_rate": round(dropout_rate, 4)}
