"""The architecture registry: each name maps to a module with its builder, loss and optimizer.

Adding an architecture is one `Architecture` entry below plus its module, which defines:

    build(config) -> keras.Model        # grayscale [height, width, 1] in [0, 1] -> logits
    loss(config) -> keras.losses.Loss   # of (label ids padded with len(charset), logits)
    optimizer(config) -> keras.optimizers.Optimizer   # with its learning-rate schedule
    search_space(hp, config) -> dict    # optional: Config changes a keras-tuner trial makes

`output` says how logits become text (see `kcaptcha.reading.decoding`); it is written into every saved model's
metadata, so reading a model needs neither this registry nor Keras. This module imports no Keras: the
configuration, the runtime install and the captcha-drawing workers read it too.
"""

import dataclasses
import importlib

OUTPUTS = ("softmax", "sigmoid", "ctc")


@dataclasses.dataclass(frozen=True)
class Architecture:
    name: str
    module: str
    output: str  # one of OUTPUTS
    description: str

    def load(self):
        """The architecture's module (imports Keras)."""
        return importlib.import_module(self.module)

    @property
    def tunable(self) -> bool:
        return hasattr(self.load(), "search_space")


ARCHITECTURES = {entry.name: entry for entry in (
    Architecture("ctc", "kcaptcha.models.ctc", "ctc",
                 "a residual CNN reading columns as a sequence, trained with CTC: any length, no alignment"),
    Architecture("heads", "kcaptcha.models.heads", "softmax",
                 "a CNN with one softmax head per character position"),
    Architecture("legacy", "kcaptcha.models.legacy", "sigmoid",
                 "the parent project's network and sigmoid loss, for comparison"),
)}


def get(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}. "
                         f"Received: architecture={name!r}") from None


def new_model(config):
    """A freshly initialised (seeded), compiled model of `config.architecture` (XLA with `jit_compile`).

    Under a `tf.distribute` strategy, call it inside `strategy.scope()`; under a mixed-precision policy the
    layers compute in float16/bfloat16 but every architecture keeps its logits (and so the loss) in float32.
    """
    import keras

    module = get(config.architecture).load()
    keras.utils.set_random_seed(config.seed)
    model = module.build(config)
    model.compile(optimizer=module.optimizer(config), loss=module.loss(config), jit_compile=config.jit_compile)
    # Without a tf.distribute strategy, Keras would create the optimizer's slots and EMA copies while tracing
    # the first training step, which is slower: 20-step smoke runs took 9-13 s that way and 5-9 s built here,
    # and the train, transfer and tune tests 477-502 s against 314 s.
    model.optimizer.build(model.trainable_variables)
    return model
