"""What every command shares: running an absl app with one-line errors and fixed exit codes, quiet TensorFlow.

Exit codes, the same in every command:
    0  success, or --help
    2  a usage error: an unknown flag, a bad value, a missing argument (one line saying which)
    1  a runtime error: a missing file, a damaged model, a failed check (one line saying what)
"""

import contextlib
import importlib.abc
import importlib.util
import os
import re
import shutil
import sys

from absl import app, flags

from kcaptcha.reading.tta import DEFAULT_COPIES

FLAGS = flags.FLAGS
EXIT_RUNTIME, EXIT_USAGE = 1, 2
# Modules the light runtime install leaves out, and the extra that brings each.
EXTRAS = {**dict.fromkeys(("tensorflow", "keras", "keras_tuner", "captcha", "tf2onnx", "onnx", "matplotlib",
                           "sklearn"), "train"),
          **dict.fromkeys(("fastapi", "uvicorn", "python_multipart", "starlette"), "serve")}


class UsageError(Exception):
    """A mistake in how a command was called; printed as one line, exit status 2."""


def no_arguments(argv, hint: str = "") -> None:
    """A `UsageError` for words after the flags of a command that takes none (absl would ignore them:
    `bin/export runs/model` used to export the default model instead)."""
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}" + (f" ({hint})" if hint else ""))


MODEL_HELP = "A model name (./saved_models/<name>, else a shipped one) or a model folder."
BACKEND_HELP = ("Inference engine (auto: the exported ONNX model when it agrees with Keras, else Keras; int8: the "
                "int8 export even where it agrees less; float: the float32 export alone).")
TTA_HELP = ("Also read each image the model is unsure of (confidence under 0.9) in this many slightly warped "
            "copies and keep the text they agree on: fewer misreads for a model trained on a few hundred images, "
            "for 1.5-2.5 times the work at 8; 0: read each image once.")


CHARSET_HELP = ("Read only these characters (e.g. 0123456789 with a 0-9a-z model on a site that draws digits): "
                "the others are left out before decoding, never read. Default: every character of the model.")


def define_model_flag(default: str = "digits", help_text: str = MODEL_HELP) -> None:
    """--model: a saved model (never an architecture, which is --architecture) in every command."""
    flags.DEFINE_string("model", default, help_text)


def define_reading_flags(help_prefix: str = "") -> None:
    """--backend and --tta: how a `Recognizer` reads (`kcaptcha.load_model`'s `backend` and `tta`)."""
    from kcaptcha.reading.recognizer import BACKENDS

    flags.DEFINE_enum("backend", "auto", BACKENDS, help_prefix + BACKEND_HELP)
    flags.DEFINE_integer("tta", DEFAULT_COPIES, help_prefix + TTA_HELP, lower_bound=0)
    flags.DEFINE_string("charset", None, help_prefix + CHARSET_HELP)


def define_model_flags() -> None:
    """--model, --backend, --tta, --progress and --label_from, for the commands that read images with a model."""
    from kcaptcha.flags import define_flags

    define_model_flag()
    define_reading_flags()
    flags.DEFINE_bool("progress", True, "Show a progress bar (on a terminal).")
    define_flags(fields=("label_from",))


def model_and_inputs(argv, example: str):
    """(recognizer, image paths, labels or None) from --model, --backend, --tta, --charset, --label_from and the
    arguments;
    a folder's labels come from its labels.csv when it has one (`kcaptcha.data.folder`)."""
    inputs = argv[1:]
    if not inputs:
        raise UsageError(f"give one or more image folders or files, e.g. {example}")
    from kcaptcha.data.folder import labelled_paths
    from kcaptcha.files import LabelRule
    from kcaptcha.reading.recognizer import load_model

    try:
        LabelRule.parse(FLAGS.label_from)
    except ValueError as error:
        raise UsageError(str(error)) from None
    paths, labels = labelled_paths(inputs, FLAGS.label_from)
    return load_model(FLAGS.model, backend=FLAGS.backend, tta=FLAGS.tta, charset=FLAGS.charset), paths, labels


def config_or_exit():
    """The validated Config from the command line; a `UsageError` naming each bad value."""
    from kcaptcha.flags import config_from_flags

    try:
        return config_from_flags(FLAGS)
    except ValueError as error:
        raise UsageError(str(error)) from None


def given_fields() -> set:
    """The Config fields set on the command line or in a flagfile (the rest may be chosen for the user)."""
    from kcaptcha.config import Config

    return {name for name in Config.field_names() if name in FLAGS and FLAGS[name].present}


def fail(message: str, code: int = EXIT_RUNTIME) -> None:
    """Prints `error: message` on a line of its own and exits with `code`."""
    clear = "\r\033[K" if sys.stderr.isatty() else ""  # a progress line may be half drawn
    print(f"{clear}error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def parse_flags(argv):
    """absl's parsing, with a one-line message and exit 2 for a bad flag, and exit 0 after --help."""
    argv = ["--help" if arg == "-h" else arg for arg in argv]
    try:
        return FLAGS(argv)
    except flags.Error as error:
        fail(f"{error} (see --help)", EXIT_USAGE)
    except SystemExit as stop:  # absl exits with 1 after printing --help, --helpfull or --helpxml
        sys.exit(0 if stop.code in (None, 1) else stop.code)


def run_main(main) -> None:
    """Runs `main(argv)` as an absl app: clean one-line errors for people, never tracebacks."""
    quiet_tensorflow()
    # The usage text of --help, naming the command as it was invoked (bin/predict or kcaptcha-predict).
    sys.modules["__main__"].__doc__ = usage_text(sys.modules[main.__module__].__doc__ or "", main.__module__,
                                                 sys.argv[0])
    # absl's --help lists only the main module's flags; the shims' flags live in kcaptcha modules.
    for module in (main.__module__, __name__, "kcaptcha.flags"):
        for flag in FLAGS.flags_by_module_dict().get(module, []):
            FLAGS.register_key_flag_for_module(sys.argv[0], flag)

    def guarded(argv):
        try:
            return main(argv)
        except UsageError as error:
            fail(str(error), EXIT_USAGE)
        except ModuleNotFoundError as error:
            extra = EXTRAS.get((error.name or "").split(".")[0])
            if extra is None:
                raise
            fail(f"this command needs {error.name}, which the runtime install leaves out: "
                 f"pip install 'kcaptcha[{extra}]'")
        except (OSError, ValueError, RuntimeError) as error:
            fail(str(error))
        except KeyboardInterrupt:
            fail("interrupted", 130)

    app.run(guarded, flags_parser=parse_flags)


def invoked_as(argv0: str, module: str) -> str:
    """The command as the user typed it: its bare name when found on PATH (`kcaptcha-predict`, an installed
    console script), `python -m <module>` for a module run, else the path given (`bin/predict`)."""
    name = os.path.basename(argv0)
    if name.endswith(".py") or name == "-m":
        return f"python -m {module}"
    found = shutil.which(name)
    if found and os.path.realpath(found) == os.path.realpath(argv0):
        return name
    return argv0


def usage_text(doc: str, module: str, argv0: str) -> str:
    """A command's module docstring (written for `bin/<command>`) with the command named as it was invoked.

    Only this command's name changes: the other commands it mentions (`bin/train`) keep theirs.
    """
    command = module.rsplit(".", 1)[-1]
    invoked = invoked_as(argv0, module)
    return re.sub(rf"(?<![\w/.-])bin/{re.escape(command)}\b", lambda _: invoked, doc)


def quiet_tensorflow() -> None:
    """Hides TensorFlow's start-up log lines (CUDA probing on a CPU-only machine) unless asked for.

    TF_CPP_MIN_LOG_LEVEL=3 (unless set otherwise) hides the C++ log; a few lines are written before that
    setting applies, so standard error is also silenced while the `tensorflow` module itself is imported.
    KCAPTCHA_TF_LOGS=1 shows everything.
    """
    if os.environ.get("KCAPTCHA_TF_LOGS"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` as usual, but runs its import with file descriptor 2 pointed at /dev/null."""

    def __init__(self):
        self.busy = False

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow" or self.busy:
            return None
        self.busy = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.busy = False
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        sys.meta_path.remove(self)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        with _stderr_silenced():
            self.inner.exec_module(module)


@contextlib.contextmanager
def _stderr_silenced():
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
