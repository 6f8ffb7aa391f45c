"""`Recognizer`: a saved model plus its metadata; `predict()` on paths, bytes, PIL images or arrays."""

import dataclasses
import io
import os
from typing import List, Sequence, Tuple, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from kcaptcha import export, saving
from kcaptcha.vocab import Vocab

BACKENDS = ("auto", "keras", "onnx")
ImageLike = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One image's reading: the text, its whole-text confidence and each character's confidence."""

    text: str
    confidence: float
    char_confidences: Tuple[float, ...]

    def to_dict(self) -> dict:
        return {"text": self.text, "confidence": self.confidence, "char_confidences": list(self.char_confidences)}


def _describe(item, index: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    return f"image #{index} ({type(item).__name__})"


def _open(item, index: int) -> Image.Image:
    try:
        if isinstance(item, (str, os.PathLike)):
            with open(item, "rb") as f:
                payload = f.read()
        else:
            payload = bytes(item)
        if not payload:
            raise ValueError(f"{_describe(item, index)} is empty (0 bytes)")
        image = Image.open(io.BytesIO(payload))
        image.load()
        return image
    except Image.DecompressionBombError as error:
        raise ValueError(f"{_describe(item, index)} is too large to decode safely ({error})") from None
    except UnidentifiedImageError:
        raise ValueError(f"{_describe(item, index)} is not an image PIL can read") from None
    except (OSError, SyntaxError) as error:
        if isinstance(error, FileNotFoundError):
            raise FileNotFoundError(f"Image not found: {_describe(item, index)}") from None
        raise ValueError(f"{_describe(item, index)} is corrupt or truncated ({error})") from None


def pil_to_gray(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 'L', compositing transparency on white (as the tf.data pipeline does)."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        pixels = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if pixels.max() > 255 else 255.0
        return Image.fromarray(np.clip(pixels / scale * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        return Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("L")


def array_to_gray(array: np.ndarray, label: str) -> Image.Image:
    """A [h, w], [h, w, 1|3|4] array (uint8, or float in [0, 1]) -> a PIL 'L' image."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or min(array.shape[:2]) < 1:
        raise ValueError(f"{label}: expected an array of shape [h, w], [h, w, 1], [h, w, 3] or [h, w, 4]. "
                         f"Received shape {array.shape}")
    if array.dtype != np.uint8:
        array = array.astype(np.float64)
        if array.size and array.max() <= 1.0:
            array = array * 255.0
        array = np.clip(array + 0.5, 0, 255).astype(np.uint8)
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[array.shape[-1] if array.ndim == 3 else 2]
    return pil_to_gray(Image.fromarray(array, mode))


class Recognizer:
    """A loaded recogniser. Create with `kcaptcha.load_model(name_or_path)`."""

    def __init__(self, model_dir: str, backend: str = "auto"):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}. Received: backend={backend!r}")
        self.model_dir = os.path.abspath(model_dir)
        self.metadata = saving.read_metadata(self.model_dir)  # checked before the slow imports
        self.name = self.metadata.get("name", os.path.basename(self.model_dir))
        self.width = int(self.metadata["width"])
        self.height = int(self.metadata["height"])
        self.vocab = Vocab(self.metadata["charset"], int(self.metadata["min_length"]), int(self.metadata["max_length"]))
        self._model = None
        onnx_file = None if backend == "keras" else export.preferred_onnx_file(self.metadata)
        if backend == "onnx" and onnx_file is None:
            raise ValueError(f"{self.model_dir} has no exported ONNX model; run bin/export --model={self.model_dir}")
        if onnx_file and backend == "auto":
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                onnx_file = None
        if onnx_file:
            try:
                session = export.onnx_session(os.path.join(self.model_dir, onnx_file))
            except Exception as error:
                raise ValueError(f"Damaged model folder {self.model_dir!r}: cannot load {onnx_file} ({error})") from None
            self.backend = f"onnx ({onnx_file})"
            self._infer = lambda batch: session.run(None, {export.INPUT_NAME: batch})[0]
        else:
            import tensorflow as tf

            model = self.model
            expected = (None, self.height, self.width, 1)
            if tuple(model.input_shape) != expected:
                raise ValueError(f"Damaged model folder {self.model_dir!r}: the model takes {model.input_shape}, "
                                 f"but metadata.json says {expected}")
            function = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
            self.backend = "keras"
            self._infer = lambda batch: function(batch).numpy()
        self._infer(np.zeros((1, self.height, self.width, 1), np.float32))  # warm up (and trace) once

    @property
    def model(self):
        """The Keras model (loaded on first use when inference runs on ONNX)."""
        if self._model is None:
            import keras

            from kcaptcha import model as _registers_custom_objects  # noqa: F401

            path = os.path.join(self.model_dir, saving.MODEL_FILE)
            try:
                self._model = keras.models.load_model(path, compile=False)
            except Exception as error:  # a damaged zip, a wrong file: name the folder and the cause
                raise ValueError(f"Damaged model folder {self.model_dir!r}: cannot load {saving.MODEL_FILE} "
                                 f"({error})") from None
        return self._model

    def __repr__(self) -> str:
        return (f"Recognizer(name={self.name!r}, backend={self.backend!r}, charset={self.vocab.charset!r}, "
                f"length={self.vocab.min_length}-{self.vocab.max_length}, size={self.width}x{self.height})")

    def preprocess(self, item: ImageLike, index: int = 0) -> np.ndarray:
        """One image -> float32 [height, width] in [0, 1]."""
        if isinstance(item, Image.Image):
            image = pil_to_gray(item)
        elif isinstance(item, np.ndarray):
            image = array_to_gray(item, _describe(item, index))
        elif isinstance(item, (str, os.PathLike, bytes, bytearray, memoryview)):
            image = pil_to_gray(_open(item, index))
        else:
            raise TypeError(f"image #{index}: expected a path, bytes, a PIL image or a numpy array. "
                            f"Received: {type(item).__name__}")
        if image.size != (self.width, self.height):
            image = image.resize((self.width, self.height), Image.BILINEAR)
        return np.asarray(image, dtype=np.float32) * (1.0 / 255.0)

    def predict_batch(self, batch: np.ndarray) -> List[Prediction]:
        """Readings of an already preprocessed float32 batch [n, height, width(, 1)]."""
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[..., None]
        probabilities = self._infer(batch)
        return self.decode(probabilities)

    def decode(self, probabilities: np.ndarray) -> List[Prediction]:
        ids = probabilities.argmax(axis=-1)
        best = probabilities.max(axis=-1)
        results = []
        for row_ids, row_best in zip(ids, best):
            keep = [i for i, c in enumerate(row_ids) if c != self.vocab.blank_id]
            results.append(Prediction(
                text=self.vocab.decode(row_ids),
                confidence=float(np.prod(row_best)),
                char_confidences=tuple(float(row_best[i]) for i in keep),
            ))
        return results

    def predict(self, images: Union[ImageLike, Sequence[ImageLike]], batch_size: int = 256):
        """Reads one image (returns a `Prediction`) or a sequence / 4-D array of them (returns a list).

        Images of any size and mode are converted to grayscale and resized to the model's input.
        """
        single = not isinstance(images, (list, tuple)) and not (isinstance(images, np.ndarray) and images.ndim == 4)
        items = [images] if single else list(images)
        results = []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            batch = np.stack([self.preprocess(item, start + i) for i, item in enumerate(chunk)])
            results.extend(self.predict_batch(batch))
        return results[0] if single else results


def load_model(name_or_path: str = "digits", backend: str = "auto") -> Recognizer:
    """Loads a saved model folder, or a model shipped in saved_models/ by name (e.g. "digits").

    Args:
        name_or_path: a shipped model's name or a saved model folder.
        backend: "auto" runs the exported ONNX model (int8 when it agrees with the Keras model) when the
            folder has one and onnxruntime is installed, else Keras; "keras" or "onnx" to choose.
    """
    return Recognizer(saving.resolve_model_dir(name_or_path), backend)
