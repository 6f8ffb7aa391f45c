"""Helpers shared by the command-line entry points (absl apps)."""

import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS


def define_model_flags() -> None:
    """--model, --backend and --progress, for the commands that read images with a saved model."""
    flags.DEFINE_string("model", "digits", "A shipped model name (saved_models/<name>) or a model folder.")
    flags.DEFINE_enum("backend", "auto", ["auto", "keras", "onnx"], "Inference engine (auto: the exported ONNX "
                      "model when it agrees with Keras, else Keras).")
    flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")


def quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def config_or_exit():
    """The validated Config from the command line, or exit 2 with the reason."""
    from kcaptcha.flags import config_from_flags

    try:
        return config_from_flags(FLAGS)
    except ValueError as error:
        raise app.UsageError(str(error))


def fail(message: str, code: int = 1) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def run_main(main) -> None:
    """absl's app.run with clean one-line errors for people instead of tracebacks."""
    quiet_tensorflow()
    sys.modules["__main__"].__doc__ = sys.modules[main.__module__].__doc__  # the usage text of --help
    # absl's --help lists only the main module's flags; the shims' flags live in kcaptcha modules.
    for module in (main.__module__, __name__, "kcaptcha.flags"):
        for flag in FLAGS.flags_by_module_dict().get(module, []):
            FLAGS.register_key_flag_for_module(sys.argv[0], flag)

    def guarded(argv):
        try:
            return main(argv)
        except (FileNotFoundError, ValueError, IsADirectoryError, NotADirectoryError, PermissionError) as error:
            fail(str(error))

    app.run(guarded)
