"""ONNX export of a saved model folder: `model.onnx` (float32) and `model.int8.onnx` (quantized).

Both output the model's logits; `kcaptcha.reading.decoding` applies the activation in float32, so confidences
mean the same on every backend. The int8 model is calibrated on the model's own training images (or,
for a model trained on synthetic captchas, on captchas of its task and look) and checked against the
Keras model on its validation images (or other captchas): the agreement (same text) and the confidence
gaps are recorded in metadata.json, and a Recognizer only uses it when the agreement is at least
`MIN_AGREEMENT`, or when it is reached by reading again on the float32 export each image the int8 model reads
with a confidence under a threshold: the lowest of `FALLBACK_CHOICES` that reaches it (recorded with the
share of images it reads twice and its agreement).
"""

import logging
import os
import tempfile

import numpy as np

from kcaptcha import files, models
from kcaptcha.export import saving
from kcaptcha.reading import decoding
from kcaptcha.reading.vocab import Vocab

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
MIN_AGREEMENT = 0.998
# The int8 model's flips are readings it is unsure of: reading again in float32 those it reads with a
# confidence under a threshold brings it to the float model's readings (the shipped alnum: 98.4% alike
# alone, 100% with the 7.8% it reads under 0.8 read again; its metadata.json). A model surer of itself
# needs a higher threshold for the same agreement: the export takes the lowest of these that reaches
# MIN_AGREEMENT.
FALLBACK_CHOICES = (0.8, 0.9, 0.95)
INPUT_NAME = "image"


def load_keras_model(model_dir: str):
    """The folder's Keras model (uncompiled); a clear error naming the folder when it cannot be read."""
    import keras

    metadata = saving.read_metadata(model_dir)
    path = os.path.join(model_dir, saving.MODEL_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Damaged model folder {model_dir!r}: {saving.MODEL_FILE} is missing")
    if metadata["architecture"] in models.ARCHITECTURES:
        models.get(metadata["architecture"]).load()  # registers the architecture's custom layers
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # a damaged zip, a wrong file: name the folder and the cause
        raise ValueError(f"Damaged model folder {model_dir!r}: cannot load {saving.MODEL_FILE} ({error})") from None


def _captchas(metadata: dict, count: int, seed: int) -> np.ndarray:
    """`count` synthetic captchas of the model's task, in the look it was trained on, as model inputs."""
    from kcaptcha.data.generate import CaptchaRenderer

    return model_inputs(CaptchaRenderer.from_metadata(metadata, seed), count)


def model_inputs(renderer, count: int) -> np.ndarray:
    """`count` captchas of a `CaptchaRenderer` as a model takes them: float32 [n, height, width, 1] in [0, 1]."""
    from kcaptcha.data.generate import render_arrays

    pixels, _ = render_arrays(renderer, count)
    return pixels[..., None].astype(np.float32) / 255.0


def _trained_on_files(metadata: dict) -> bool:
    """Whether the model was trained on a folder of images that is still there."""
    train_dir = (metadata.get("config") or {}).get("train_dir", "")
    return bool(train_dir) and os.path.isdir(train_dir)


def _own_images(metadata: dict, calibration_size: int, check_size: int, seed: int):
    """(calibration images, check images, how many of those are warped copies, where they came from): the
    model's own training and validation folders when it was trained on files that are still there, else
    synthetic captchas of its task.

    The check compares readings, so it needs images like the user's, not labels: the validation images and
    the training images left over from calibration, then, up to `check_size`, warped copies of all of them
    (`kcaptcha.reading.tta`'s warps). A model trained on 200 labels has some 20 validation images: checked on those
    alone, a 99.8% bar only meant "no flip in 20".
    """
    from kcaptcha.data import images
    from kcaptcha.reading import tta
    from kcaptcha.files import list_images

    config = metadata.get("config") or {}
    train_dir, val_dir = config.get("train_dir", ""), config.get("val_dir", "")
    if not _trained_on_files(metadata):
        return (_captchas(metadata, calibration_size, seed), _captchas(metadata, check_size, seed + 1), 0,
                "synthetic captchas of the model's task")
    train_paths = list(np.random.default_rng(seed).permutation(list_images(train_dir)))
    val_paths = list_images(val_dir) if val_dir and os.path.isdir(val_dir) else []

    def load(paths):
        if not paths:
            return np.zeros((0, metadata["height"], metadata["width"], 1), np.float32)
        preprocessing = images.Preprocessing.from_metadata(metadata)
        return np.stack([images.to_model_input(p, metadata["width"], metadata["height"], preprocessing=preprocessing)
                         for p in paths])[..., None]

    calibration = load(train_paths[:calibration_size])
    unused = (val_paths + train_paths[calibration_size:])[:check_size]
    check = load(unused)
    missing = check_size - len(check)
    if missing > 0 and len(check) + len(calibration):
        real = np.concatenate([check, calibration])[..., 0]
        copies = [tta.warp(real, coefficients)[..., None]
                  for coefficients in tta.warps(-(-missing // len(real)), metadata["width"], metadata["height"])]
        check = np.concatenate([check, *copies])[:check_size]
    where = f"the model's own images: {train_dir}" + (f" and {val_dir}" if val_dir else "")
    return calibration, check, len(check) - len(unused), where


def own_check_images(metadata: dict, count: int, seed: int):
    """(`count` model inputs to check an export on, how many are warped copies, where they came from) from the
    model's own images, as `export_onnx` checks its int8 model (none set aside for calibration); None for a
    model not trained on files that are still there."""
    if not _trained_on_files(metadata):
        return None
    _, check, warped, where = _own_images(metadata, 0, count, seed)
    return check, warped, where


def to_onnx(model, path: str) -> None:
    """Writes `model` to `path` as float32 ONNX (input [batch, its height, width, channels]), atomically."""
    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    signature = (tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name=INPUT_NAME),)
    function = tf.function(lambda image: model(image, training=False))
    with files.atomic_path(path) as tmp:
        tf2onnx.convert.from_function(function, input_signature=signature, opset=17, output_path=tmp)


def to_int8(source: str, destination: str, calibration: np.ndarray) -> None:
    """Writes the int8 (QDQ, per-channel 7-bit weights) version of ONNX `source` to `destination`, its
    activation ranges calibrated on the float32 `calibration` images [n, height, width, 1]."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.array_split(calibration, max(1, len(calibration) // 64)))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))  # quiet shape inference
    with tempfile.TemporaryDirectory() as tmp:
        prepared = os.path.join(tmp, "prepared.onnx")
        quant_pre_process(source, prepared)
        with files.atomic_path(destination) as quantized:
            # reduce_range: 7-bit weights. Without it, onnxruntime's u8s8 x86 kernels saturate on per-channel
            # weights; the shipped digits model then agreed with Keras on 65% of captchas instead of 100%.
            quantize_static(prepared, quantized, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def onnx_session(path: str, spin: bool = False):
    """An onnxruntime session for `path` on the CPU.

    spin: let the session's threads spin briefly between calls, as onnxruntime does by default: a single
        image then takes about two thirds of the time. Off by default for servers, whose event loop and
        decoders need those cores.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def compare(reference: list, candidate: list) -> dict:
    """How far `candidate` readings are from `reference` ones: same-text rate and confidence gaps."""
    gaps = np.abs([a.confidence - b.confidence for a, b in zip(reference, candidate)])
    return {"agreement": float(np.mean([a.text == b.text for a, b in zip(reference, candidate)])),
            "mean_confidence_gap": float(gaps.mean()), "max_confidence_gap": float(gaps.max())}


def export_onnx(model_dir: str, quantize: bool = True, calibration_size: int = 512, check_size: int = 1000,
                seed: int = 31337) -> dict:
    """Writes the ONNX files into `model_dir` and records them in its metadata.json.

    Returns:
        The `export` entry written to metadata.json.
    """
    metadata = saving.read_metadata(model_dir)
    model = load_keras_model(model_dir)
    vocab = Vocab(metadata["charset"], metadata["min_length"], metadata["max_length"])

    def read(logits):
        return decoding.decode(logits, metadata["output"], vocab)

    to_onnx(model, os.path.join(model_dir, ONNX_FILE))
    calibration, check, warped, where = _own_images(metadata, calibration_size, check_size, seed)
    reference = read(model.predict(check, batch_size=256, verbose=0))
    exported = read(onnx_session(os.path.join(model_dir, ONNX_FILE)).run(None, {INPUT_NAME: check})[0])
    entry = {"onnx": ONNX_FILE, **{f"onnx_{k}": v for k, v in compare(reference, exported).items()}}
    if quantize:
        to_int8(os.path.join(model_dir, ONNX_FILE), os.path.join(model_dir, INT8_FILE), calibration)
        quantized = read(onnx_session(os.path.join(model_dir, INT8_FILE)).run(None, {INPUT_NAME: check})[0])
        entry.update({"int8": INT8_FILE, **{f"int8_{k}": v for k, v in compare(reference, quantized).items()}})
        entry.update(fallback_threshold(reference, quantized, exported))
    entry.update(check_images=len(check), check_warped_copies=warped, calibration_images=len(calibration),
                 images_from=where)
    metadata["export"] = entry
    files.atomic_write_json(os.path.join(model_dir, saving.METADATA_FILE), metadata)
    return entry


def fallback_threshold(reference: list, quantized: list, exact: list) -> dict:
    """The lowest of `FALLBACK_CHOICES` under which reading the int8 readings again in float32 (`exact`)
    agrees with `reference` on `MIN_AGREEMENT` of them, else the highest; with its share and agreement."""
    for below in FALLBACK_CHOICES:
        entry = fallback_check(reference, quantized, exact, below)
        if entry["int8_fallback_agreement"] >= MIN_AGREEMENT:
            break
    return entry


def fallback_check(reference: list, quantized: list, exact: list, below: float) -> dict:
    """Reading again in float32 the int8 readings under `below`: the share read twice and the agreement."""
    read_twice = []

    def float_readings(unsure):
        read_twice.extend(unsure)
        return [exact[i] for i in unsure]

    readings = decoding.with_fallback(quantized, below, float_readings)
    return {"int8_fallback_below": below, "int8_fallback_agreement": compare(reference, readings)["agreement"],
            "int8_fallback_share": len(read_twice) / len(quantized)}


def onnx_files(metadata: dict, backend: str = "auto"):
    """The ONNX files a Recognizer runs for `backend`: (file or None, fallback file or None, fallback_below).

    For "auto" and "onnx": int8 when it agrees with Keras; else int8 with the float32 export as fallback for
    the readings under `fallback_below` when that agrees; else float32 when it agrees. For "int8": the int8
    export alone whatever its agreement; for "float" the float32 one alone. For "keras": none.
    """
    entry = metadata.get("export") or {}
    if backend in ("int8", "float"):
        return entry.get({"int8": "int8", "float": "onnx"}[backend]), None, 0.0
    if backend == "keras":
        return None, None, 0.0

    def agrees(name):
        return entry.get(f"{name}_agreement", 0.0) >= MIN_AGREEMENT

    if entry.get("int8") and agrees("int8"):
        return entry["int8"], None, 0.0
    if entry.get("onnx") and agrees("onnx"):
        if entry.get("int8") and agrees("int8_fallback"):
            return entry["int8"], entry["onnx"], float(entry["int8_fallback_below"])
        return entry["onnx"], None, 0.0
    return None, None, 0.0
