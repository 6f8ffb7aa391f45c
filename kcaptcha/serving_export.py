"""Exports for model servers and phones, with the reading (logits -> text, confidence) inside the graph.

- `export_savedmodel`: a TensorFlow SavedModel for TensorFlow Serving. Its `serving_default` signature takes
  `image_bytes` (a batch of encoded PNG, JPEG or GIF files) and returns `text` and `confidence`, as
  `Recognizer.predict` reads them.
- `export_tflite`: a TFLite model of builtin ops only (the stock runtime, no Flex delegate), for phones: it
  takes `pixels`, float32 [n, height, width, 1] in [0, 1] as `kcaptcha.images` makes them (apps decode
  images with the platform's own decoders), and returns `ids` (int32 [n, characters], -1 past the text's
  end: indices into the charset) and `confidence`. The charset and input size go to `<file>.json` beside it.

Both read greedily as `kcaptcha.decoding` does: per position (softmax or sigmoid: the best class, blanks
dropped) or per CTC frame (the best class, repeats collapsed, blanks dropped); the confidence is the product
of the best probabilities (per position; for CTC per character, each its best frame's), and 0 for a CTC
text whose length the model never reads. Each export is checked
against the Keras `Recognizer` on fresh captchas, and its agreement returned.
"""

import io
import os
import shutil
import tempfile

import numpy as np

from kcaptcha import files, images, saving

MIN_AGREEMENT = 0.998
SIGNATURE_INPUT = "image_bytes"


def read_logits(logits, metadata: dict):
    """(ids, confidence) of a batch of logits, in TensorFlow: ids [n, characters] with -1 after the text."""
    import tensorflow as tf

    num_chars, output = len(metadata["charset"]), metadata["output"]
    logits = tf.cast(logits, tf.float32)
    probabilities = tf.math.sigmoid(logits) if output == "sigmoid" else tf.nn.softmax(logits, axis=-1)
    ids = tf.argmax(probabilities, axis=-1, output_type=tf.int32)  # [n, positions or frames]
    confidence = tf.reduce_prod(tf.reduce_max(probabilities, axis=-1), axis=-1)
    keep = ids < num_chars  # drops the blank (the padding class, or CTC's last class)
    if output == "ctc":
        spelled = keep  # frames that spell a character
        previous = tf.concat([tf.fill(tf.shape(ids[:, :1]), num_chars), ids[:, :-1]], axis=1)
        keep = tf.logical_and(keep, tf.not_equal(ids, previous))  # a repeat is the same character
        confidence = _character_product(tf.reduce_max(probabilities, axis=-1), spelled, keep)
        length = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)
        possible = tf.logical_and(length >= metadata["min_length"], length <= metadata["max_length"])
        confidence = tf.where(possible, confidence, tf.zeros_like(confidence))
    return _compact(ids, keep), confidence


def _character_product(best, spelled, starts):
    """The product over a CTC text's characters of each one's best frame probability (as `decoding`)."""
    import tensorflow as tf

    starts = tf.cast(starts, tf.int32)
    slot = tf.where(spelled, tf.cumsum(starts, axis=1) - 1, -tf.ones_like(starts))  # the character of a frame
    frames = tf.one_hot(slot, depth=tf.shape(best)[1], dtype=best.dtype)  # [n, frames, characters]
    char_best = tf.reduce_max(frames * best[:, :, None], axis=1)
    used = tf.reduce_max(frames, axis=1) > 0
    return tf.reduce_prod(tf.where(used, char_best, tf.ones_like(char_best)), axis=1)


def _compact(ids, keep):
    """The kept ids of each row moved to its front, -1 after them (one-hot sums: TFLite builtins only)."""
    import tensorflow as tf

    keep = tf.cast(keep, tf.int32)
    slot = tf.where(keep > 0, tf.cumsum(keep, axis=1) - 1, -tf.ones_like(keep))  # -1: no slot
    slots = tf.one_hot(slot, depth=tf.shape(ids)[1], dtype=tf.int32)  # [n, frames, slots]
    return tf.reduce_sum(slots * (ids + 1)[:, :, None], axis=1) - 1


def _texts(ids, charset: str):
    import tensorflow as tf

    characters = tf.constant(list(charset) + [""])  # index -1 reads as the empty string
    return tf.strings.reduce_join(tf.gather(characters, tf.where(ids < 0, len(charset), ids)), axis=1)


def _write_savedmodel(model, function, input_spec, folder: str) -> None:
    """A SavedModel of `function` (which calls `model`) as its `serving_default` signature, written whole."""
    import keras

    archive = keras.export.ExportArchive()  # tracks the Keras 3 variables, which a bare tf.Module misses
    archive.track(model)
    archive.add_endpoint("serving_default", function, input_signature=[input_spec])
    _replace(folder, lambda tmp: archive.write_out(tmp, verbose=False))


def export_savedmodel(model_dir: str, output: str, check_size: int = 500, seed: int = 4242) -> dict:
    """Writes the SavedModel folder `output` (replacing it whole) and checks it on `check_size` captchas."""
    import tensorflow as tf

    from kcaptcha.export import load_keras_model

    metadata = saving.read_metadata(model_dir)
    model = load_keras_model(model_dir)
    height, width = int(metadata["height"]), int(metadata["width"])

    def serve(image_bytes):
        # TensorFlow's decoders only: a SavedModel cannot carry decode_image's PIL fallback for BMP files.
        pixels = tf.map_fn(lambda data: images._decode_with_tf(data, height, width), image_bytes,
                           fn_output_signature=tf.TensorSpec([height, width, 1], tf.float32))
        ids, confidence = read_logits(model(pixels, training=False), metadata)
        return {"text": _texts(ids, metadata["charset"]), "confidence": confidence}

    _write_savedmodel(model, serve, tf.TensorSpec([None], tf.string, name=SIGNATURE_INPUT), output)
    reader = tf.saved_model.load(output).signatures["serving_default"]
    pil_images = _fresh_captchas(metadata, check_size, seed)
    result = reader(**{SIGNATURE_INPUT: tf.constant([_png(image) for image in pil_images])})
    texts = [text.decode("utf-8") for text in result["text"].numpy()]
    return {"format": "savedmodel", "path": output, "signature": "serving_default", "input": SIGNATURE_INPUT,
            **agreement(model_dir, pil_images, texts, result["confidence"].numpy())}


def export_tflite(model_dir: str, output: str, check_size: int = 500, seed: int = 4242) -> dict:
    """Writes the TFLite model `output` and `output.json` (charset, size) and checks it on `check_size` captchas."""
    import tensorflow as tf

    from kcaptcha.export import load_keras_model

    metadata = saving.read_metadata(model_dir)
    model = load_keras_model(model_dir)
    height, width = int(metadata["height"]), int(metadata["width"])

    def read(pixels):
        ids, confidence = read_logits(model(pixels, training=False), metadata)
        return {"ids": ids, "confidence": confidence}

    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "savedmodel")
        _write_savedmodel(model, read, tf.TensorSpec([None, height, width, 1], tf.float32, name="pixels"), folder)
        flatbuffer = tf.lite.TFLiteConverter.from_saved_model(folder).convert()  # builtin ops, or it fails
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    files.atomic_write_bytes(output, flatbuffer)
    files.atomic_write_json(output + ".json", {
        "charset": metadata["charset"], "width": width, "height": height, "output": metadata["output"],
        "input": "pixels: float32 [n, height, width, 1] in [0, 1], grayscale (kcaptcha.images)",
        "outputs": "ids: int32 [n, characters], indices into charset, -1 after the text; confidence: float32 [n]"})
    pil_images = _fresh_captchas(metadata, check_size, seed)
    texts, confidences = run_tflite(output, np.stack([images.to_model_input(i, width, height) for i in pil_images]),
                                    metadata["charset"])
    return {"format": "tflite", "path": output, **agreement(model_dir, pil_images, texts, confidences)}


def run_tflite(path: str, pixels: np.ndarray, charset: str):
    """(texts, confidences) of float32 pixels [n, height, width] read by the TFLite model at `path`."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=path)
    runner = interpreter.get_signature_runner()
    result = runner(pixels=np.asarray(pixels, np.float32)[..., None])
    texts = ["".join(charset[i] for i in row if i >= 0) for row in result["ids"]]
    return texts, result["confidence"]


def agreement(model_dir: str, pil_images, texts, confidences) -> dict:
    """How an export's readings compare with the Keras `Recognizer`'s on the same images."""
    from kcaptcha.recognizer import Recognizer

    reference = Recognizer(model_dir, backend="keras").predict(list(pil_images))
    gaps = np.abs([r.confidence - float(c) for r, c in zip(reference, confidences)])
    return {"agreement": float(np.mean([r.text == t for r, t in zip(reference, texts)])),
            "max_confidence_gap": float(gaps.max()), "check_images": len(reference)}


def _fresh_captchas(metadata: dict, count: int, seed: int):
    from kcaptcha.generate import CaptchaRenderer

    renderer = CaptchaRenderer.from_metadata(metadata, seed)
    return [renderer.render(index)[1] for index in range(count)]


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _replace(folder: str, write) -> None:
    """Runs `write(tmp)` into a fresh folder beside `folder`, then puts it in `folder`'s place."""
    folder = os.path.abspath(folder)
    staging = files.staging_dir(folder)
    try:
        write(staging)
        if os.path.exists(folder):
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

