"""ONNX export of a saved model folder: `model.onnx` (float32) and `model.int8.onnx` (quantized).

The int8 model is calibrated on captchas of the model's own charset and size, and checked against the
Keras model on other captchas: its agreement (same text) is recorded in metadata.json, and a Recognizer
only uses it when the agreement is at least `INT8_MIN_AGREEMENT`.
"""

import json
import logging
import os
import tempfile

import numpy as np

from kcaptcha import saving

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INT8_MIN_AGREEMENT = 0.998
INPUT_NAME = "image"


def _captchas(metadata: dict, count: int, seed: int) -> np.ndarray:
    from kcaptcha.generate import CaptchaRenderer, render_arrays

    renderer = CaptchaRenderer(metadata["charset"], metadata["min_length"], metadata["max_length"],
                               metadata["width"], metadata["height"], seed=seed)
    pixels, _ = render_arrays(renderer, count)
    return pixels[..., None].astype(np.float32) / 255.0


def _to_onnx(model, metadata: dict, path: str) -> None:
    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.WARNING)

    signature = (tf.TensorSpec((None, metadata["height"], metadata["width"], 1), tf.float32, name=INPUT_NAME),)
    function = tf.function(lambda image: model(image, training=False))
    tmp = f"{path}.tmp-{os.getpid()}"
    tf2onnx.convert.from_function(function, input_signature=signature, opset=17, output_path=tmp)
    os.replace(tmp, path)


def _quantize(source: str, destination: str, calibration: np.ndarray) -> None:
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
        quantized = os.path.join(tmp, "quantized.onnx")
        quantize_static(prepared, quantized, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        os.replace(quantized, destination)


def onnx_session(path: str):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle threads must sleep, not spin: a server's event loop and decoders need those cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def export_onnx(model_dir: str, quantize: bool = True, calibration_size: int = 512, check_size: int = 1000,
                seed: int = 31337) -> dict:
    """Writes the ONNX files into `model_dir` and records them in its metadata.json.

    Returns:
        The `export` entry written to metadata.json.
    """
    import keras

    from kcaptcha import model as _registers_custom_objects  # noqa: F401

    metadata = saving.read_metadata(model_dir)
    model = keras.models.load_model(os.path.join(model_dir, saving.MODEL_FILE), compile=False)
    _to_onnx(model, metadata, os.path.join(model_dir, ONNX_FILE))
    entry = {"onnx": ONNX_FILE}
    check = _captchas(metadata, check_size, seed + 1)
    reference = model.predict(check, batch_size=256, verbose=0).argmax(-1)
    exported = onnx_session(os.path.join(model_dir, ONNX_FILE)).run(None, {INPUT_NAME: check})[0].argmax(-1)
    entry["onnx_agreement"] = float(np.mean(np.all(exported == reference, axis=-1)))
    if quantize:
        _quantize(os.path.join(model_dir, ONNX_FILE), os.path.join(model_dir, INT8_FILE),
                  _captchas(metadata, calibration_size, seed))
        quantized = onnx_session(os.path.join(model_dir, INT8_FILE)).run(None, {INPUT_NAME: check})[0].argmax(-1)
        entry["int8"] = INT8_FILE
        entry["int8_agreement"] = float(np.mean(np.all(quantized == reference, axis=-1)))
    entry["check_images"] = check_size
    metadata["export"] = entry
    path = os.path.join(model_dir, saving.METADATA_FILE)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return entry


def preferred_onnx_file(metadata: dict):
    """The ONNX file a Recognizer should run, or None: int8 when it agrees with Keras, else float32."""
    entry = metadata.get("export") or {}
    if entry.get("int8") and entry.get("int8_agreement", 0.0) >= INT8_MIN_AGREEMENT:
        return entry["int8"]
    if entry.get("onnx") and entry.get("onnx_agreement", 0.0) >= INT8_MIN_AGREEMENT:
        return entry["onnx"]
    return None
