"""Exports for model servers and phones, with the reading (logits -> text, confidence) inside the graph.

- `export_savedmodel`: a TensorFlow SavedModel for TensorFlow Serving. Its `serving_default` signature takes
  `image_bytes` (a batch of encoded PNG, JPEG or GIF files) and returns `text` and `confidence`, as
  `Recognizer.predict` reads them.
- `export_tflite`: a TFLite model of builtin ops only (the stock runtime, no Flex delegate), for phones: it
  takes `pixels`, float32 [n, height, width, 1] in [0, 1] as `kcaptcha.data.images` makes them (apps decode
  images with the platform's own decoders), and returns `ids` (int32 [n, characters], -1 past the text's
  end: indices into the charset) and `confidence`. The charset and input size go to `<file>.json` beside it.

Both read as `kcaptcha.reading.decoding` does: per position (softmax or sigmoid: the best class, blanks dropped) or
per CTC frame (the best class, repeats collapsed, blanks dropped); the confidence is the product of the best
probabilities (per position; for CTC per character, each its best frame's). A CTC text whose length the
model never reads is read again as the best frame path of an allowed length, its confidence scaled by that
path's probability relative to the greedy one's. Each export is checked against the Keras `Recognizer` on
images like the user's, as the ONNX export is (`kcaptcha.export.onnx`): a model trained on files on its own
validation and left-over training images, topped up with warped copies of them; a model trained on synthetic
captchas on fresh captchas of its task. Its agreement is returned with where the images came from.
"""

import io
import os
import tempfile

import numpy as np

from kcaptcha import files
from kcaptcha.data import images
from kcaptcha.export import saving
from kcaptcha.reading import decoding

SIGNATURE_INPUT = "image_bytes"


def read_logits(logits, metadata: dict):
    """(ids, confidence) of a batch of logits, in TensorFlow: ids [n, characters] with -1 after the text."""
    import tensorflow as tf

    num_chars, output = len(metadata["charset"]), metadata["output"]
    logits = tf.cast(logits, tf.float32)
    probabilities = tf.math.sigmoid(logits) if output == "sigmoid" else tf.nn.softmax(logits, axis=-1)
    ids = tf.argmax(probabilities, axis=-1, output_type=tf.int32)  # [n, positions or frames]
    if output != "ctc":
        keep = ids < num_chars  # drops the blank (the padding class)
        return _compact(ids, keep), tf.reduce_prod(tf.reduce_max(probabilities, axis=-1), axis=-1)
    min_length, max_length = int(metadata["min_length"]), int(metadata["max_length"])
    greedy_length = tf.reduce_sum(tf.cast(_ctc_starts(ids, num_chars), tf.int32), axis=1)
    in_range = tf.logical_and(greedy_length >= min_length, greedy_length <= max_length)
    # Greedy readings of a length the model never reads are read again as the best path of an allowed one
    # (the search only runs when a batch has one: a tf.cond, TFLite's builtin IF).
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    frames = int(logits.shape[1])
    paths, scores = tf.cond(
        tf.reduce_all(in_range),
        lambda: (ids, tf.zeros_like(greedy_length, tf.float32)),
        lambda: _best_paths_of_length(log_probs, min_length, max_length))
    paths = tf.ensure_shape(paths, [None, frames])
    redo = tf.logical_and(tf.logical_not(in_range), scores > decoding.IMPOSSIBLE / 2)
    ids = tf.where(redo[:, None], paths, ids)
    chosen = tf.reduce_sum(tf.one_hot(ids, num_chars + 1, dtype=tf.float32) * probabilities, axis=-1)
    keep = _ctc_starts(ids, num_chars)
    confidence = _character_product(chosen, ids < num_chars, keep)
    greedy_score = tf.reduce_sum(tf.reduce_max(log_probs, axis=-1), axis=-1)
    ratio = tf.exp(tf.minimum(scores - greedy_score, 0.0))  # the path's probability / the greedy path's
    confidence = tf.where(redo, confidence * ratio, tf.where(in_range, confidence, tf.zeros_like(confidence)))
    return _compact(ids, keep), confidence


def _ctc_starts(ids, blank: int):
    """Frames that start a character: not the blank, and not a repeat of the frame before."""
    import tensorflow as tf

    previous = tf.concat([tf.fill(tf.shape(ids[:, :1]), blank), ids[:, :-1]], axis=1)
    return tf.logical_and(ids < blank, tf.not_equal(ids, previous))


def _best_paths_of_length(log_probs, min_length: int, max_length: int):
    """`decoding.best_paths_of_length` in TensorFlow, unrolled over the frames; one-hot sums instead of
    gathers (TFLite builtins only). Returns (paths int32 [n, frames], scores float32 [n])."""
    import tensorflow as tf

    frames, classes = int(log_probs.shape[1]), int(log_probs.shape[2])
    blank, rows = classes - 1, max_length + 1
    n = tf.shape(log_probs)[0]
    impossible = tf.constant(decoding.IMPOSSIBLE, tf.float32)
    chars = tf.range(blank, dtype=tf.int32)
    score = tf.where(tf.equal(tf.range(rows * classes), blank),  # row 0's blank: nothing spelled yet
                     0.0, impossible)[None]
    score = tf.reshape(tf.tile(score, [n, 1]), [n, rows, classes])
    no_row = tf.fill([n, 1, blank], impossible)
    steps = []
    for t in range(frames):
        first = tf.argmax(score, axis=-1, output_type=tf.int32)  # [n, rows]
        top = tf.reduce_max(score, axis=-1)
        others = tf.where(tf.one_hot(first, classes, on_value=True, off_value=False), impossible, score)
        second = tf.argmax(others, axis=-1, output_type=tf.int32)
        runner_up = tf.reduce_max(others, axis=-1)
        is_first = tf.equal(first[:, :-1, None], chars)
        enter = tf.concat([no_row, tf.where(is_first, runner_up[:, :-1, None], top[:, :-1, None])], axis=1)
        source = tf.concat([tf.zeros([n, 1, blank], tf.int32),
                            tf.where(is_first, second[:, :-1, None], first[:, :-1, None])], axis=1)
        stay = score[:, :, :blank] >= enter
        score = tf.concat([log_probs[:, t, None, :blank] + tf.where(stay, score[:, :, :blank], enter),
                           log_probs[:, t, None, blank:] + top[:, :, None]], axis=-1)
        steps.append((first, stay, source))
    ends = tf.where(tf.range(rows) < min_length, impossible, tf.reduce_max(score, axis=-1))
    count = tf.argmax(ends, axis=-1, output_type=tf.int32)
    scores = tf.reduce_max(ends, axis=-1)

    def at_count(values):  # values [n, rows, ...] at each row's state count
        hot = tf.one_hot(count, rows, dtype=values.dtype)
        return tf.reduce_sum(tf.reshape(hot, [n, rows] + [1] * (len(values.shape) - 2)) * values, axis=1)

    symbol = tf.argmax(at_count(score), axis=-1, output_type=tf.int32)
    path = []
    for first, stay, source in reversed(steps):
        path.append(symbol)
        is_blank = tf.equal(symbol, blank)
        char = tf.one_hot(tf.minimum(symbol, blank - 1), blank, dtype=tf.int32)
        kept = tf.reduce_sum(at_count(tf.cast(stay, tf.int32)) * char, axis=-1) > 0
        entered_from = tf.reduce_sum(at_count(source) * char, axis=-1)
        symbol = tf.where(is_blank, at_count(first), tf.where(kept, symbol, entered_from))
        count = tf.where(tf.logical_or(is_blank, kept), count, count - 1)
    return tf.stack(path[::-1], axis=1), scores


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
    files.replace_folder(folder, lambda staging: archive.write_out(staging, verbose=False))


def export_savedmodel(model_dir: str, output: str, check_size: int = 500, seed: int = 4242) -> dict:
    """Writes the SavedModel folder `output` (replacing it whole) and checks it on `check_size` captchas."""
    import tensorflow as tf

    from kcaptcha.export.onnx import load_keras_model

    metadata = saving.read_metadata(model_dir)
    _plain_only(metadata, model_dir)
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
    pil_images, where = check_images(metadata, check_size, seed)
    result = reader(**{SIGNATURE_INPUT: tf.constant([_png(image) for image in pil_images])})
    texts = [text.decode("utf-8") for text in result["text"].numpy()]
    return {"format": "savedmodel", "path": output, "signature": "serving_default", "input": SIGNATURE_INPUT,
            **agreement(model_dir, pil_images, texts, result["confidence"].numpy()), "images_from": where}


def export_tflite(model_dir: str, output: str, check_size: int = 500, seed: int = 4242) -> dict:
    """Writes the TFLite model `output` and `output.json` (charset, size) and checks it on `check_size` captchas."""
    import tensorflow as tf

    from kcaptcha.export.onnx import load_keras_model

    metadata = saving.read_metadata(model_dir)
    _plain_only(metadata, model_dir)
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
        "input": "pixels: float32 [n, height, width, 1] in [0, 1], grayscale (kcaptcha.data.images)",
        "outputs": "ids: int32 [n, characters], indices into charset, -1 after the text; confidence: float32 [n]"})
    pil_images, where = check_images(metadata, check_size, seed)
    texts, confidences = run_tflite(output, np.stack([images.to_model_input(i, width, height) for i in pil_images]),
                                    metadata["charset"])
    return {"format": "tflite", "path": output, **agreement(model_dir, pil_images, texts, confidences),
            "images_from": where}


def _plain_only(metadata: dict, model_dir: str) -> None:
    """SavedModel and TFLite exports read grayscale as TensorFlow decodes it; a model that selects a colour or
    combines GIF frames first (`kcaptcha.data.images.Preprocessing`) reads right only through `load_model`."""
    if not images.Preprocessing.from_metadata(metadata).plain:
        raise ValueError(f"{model_dir} selects a colour or combines GIF frames before grayscale, which only "
                         "kcaptcha's own reading applies: read it with kcaptcha.load_model or its ONNX export")


def run_tflite(path: str, pixels: np.ndarray, charset: str):
    """(texts, confidences) of float32 pixels [n, height, width] read by the TFLite model at `path`."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=path)
    runner = interpreter.get_signature_runner()
    result = runner(pixels=np.asarray(pixels, np.float32)[..., None])
    texts = ["".join(charset[i] for i in row if i >= 0) for row in result["ids"]]
    return texts, result["confidence"]


def agreement(model_dir: str, pil_images, texts, confidences) -> dict:
    """How an export's readings compare with the Keras `Recognizer`'s on the same images (`onnx.compare`)."""
    from kcaptcha.export.onnx import compare
    from kcaptcha.reading.recognizer import Recognizer

    reference = Recognizer(model_dir, backend="keras", tta=0).predict(list(pil_images))
    exported = [decoding.Prediction(text, float(confidence), ()) for text, confidence in zip(texts, confidences)]
    return {**compare(reference, exported), "check_images": len(reference)}


def check_images(metadata: dict, count: int, seed: int):
    """(`count` PIL images to check an export on, where they came from): the model's own images when it was
    trained on files that are still there (`kcaptcha.export.onnx`'s choice, at the model's input size), else fresh
    captchas of its task."""
    from PIL import Image

    from kcaptcha.export.onnx import own_check_images
    from kcaptcha.data.generate import CaptchaRenderer

    own = own_check_images(metadata, count, seed)
    if own is None:
        renderer = CaptchaRenderer.from_metadata(metadata, seed)
        return [renderer.render(index)[1] for index in range(count)], "synthetic captchas of the model's task"
    pixels, warped, where = own
    return ([Image.fromarray(np.round(image[..., 0] * 255.0).astype(np.uint8), "L") for image in pixels],
            f"{where} ({warped} of them warped copies)")


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()

