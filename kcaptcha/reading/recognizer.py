"""`Recognizer`: a saved model plus its metadata; `predict()` on paths, bytes, PIL images or arrays.

Runs on onnxruntime when the folder has an export (no TensorFlow needed), else on Keras.
"""

import os
from typing import List, Sequence, Union

import numpy as np

from kcaptcha.data import images
from kcaptcha.data.images import ImageLike
from kcaptcha.export import onnx as export
from kcaptcha.export import saving
from kcaptcha.reading import decoding
from kcaptcha.reading import tta as warped_copies  # `tta` is the argument's name
from kcaptcha.reading.decoding import Prediction
from kcaptcha.reading.vocab import Vocab

BACKENDS = ("auto", "keras", "onnx", "int8", "float")

__all__ = ["BACKENDS", "Prediction", "Recognizer", "load_model"]


class Recognizer:
    """A loaded recogniser. Create with `kcaptcha.load_model(name_or_path)`."""

    def __init__(self, model_dir: str, backend: str = "auto", spin: bool = True, tta: int = 0,
                 tta_below: float = warped_copies.UNSURE_BELOW):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}. Received: backend={backend!r}")
        if not isinstance(tta, int) or tta < 0:
            raise ValueError(f"tta must be a whole number of warped copies, 0 or more. Received: tta={tta!r}")
        if not 0.0 <= tta_below <= 1.0:
            raise ValueError(f"tta_below must be a confidence from 0 to 1. Received: tta_below={tta_below!r}")
        self.tta, self.tta_below = tta, tta_below
        self.model_dir = os.path.abspath(model_dir)
        self.metadata = saving.read_metadata(self.model_dir)  # checked before the slow imports
        self.name = self.metadata.get("name", os.path.basename(self.model_dir))
        self.width, self.height = int(self.metadata["width"]), int(self.metadata["height"])
        self.preprocessing = images.Preprocessing.from_metadata(self.metadata)  # colour selection, GIF frames
        self.output = self.metadata["output"]
        self._warps = warped_copies.warps(tta, self.width, self.height)
        self.vocab = Vocab(self.metadata["charset"], int(self.metadata["min_length"]), int(self.metadata["max_length"]))
        self._model = self.session = None  # session: the onnxruntime session, when it runs on ONNX
        onnx_file, fallback_file, self.fallback_below = export.onnx_files(self.metadata, backend)
        if backend in ("onnx", "int8", "float") and onnx_file is None:
            kind = {"int8": "int8 ", "float": "float32 "}.get(backend, "")
            raise ValueError(f"{self.model_dir} has no {kind}ONNX export; "
                             f"run bin/export --model={self.model_dir}")
        if onnx_file and backend == "auto" and not _has_module("onnxruntime"):
            onnx_file = fallback_file = None
        self._fallback = None  # with an int8 model: the float32 one, for the readings under fallback_below
        if onnx_file:
            self.session, self._infer = self._onnx_infer(onnx_file, spin)
            self.backend = f"onnx ({onnx_file})"
            if fallback_file:
                # Never spinning: it runs right after the int8 model, whose threads are still spinning; two
                # sessions spinning on 2 cores read alnum at 2,700 images/s instead of 3,200.
                self._fallback = self._onnx_infer(fallback_file, spin=False)[1]
                self.backend = f"onnx ({onnx_file}; {fallback_file} under {self.fallback_below:g})"
        else:
            self.backend, self._infer = "keras", self._keras_infer()
        for infer in (self._infer, self._fallback):  # warm up (and trace) once
            if infer is not None:
                infer(np.zeros((1, self.height, self.width, 1), np.float32))

    def _onnx_infer(self, onnx_file: str, spin: bool):
        try:
            session = export.onnx_session(os.path.join(self.model_dir, onnx_file), spin=spin)
        except Exception as error:  # onnxruntime raises its own types for a damaged file
            raise ValueError(f"Damaged model folder {self.model_dir!r}: cannot load {onnx_file} ({error})") from None
        return session, lambda batch: session.run(None, {export.INPUT_NAME: batch})[0]

    def _keras_infer(self):
        if not _has_module("keras"):
            raise ValueError(f"{self.model_dir} has no ONNX export that agrees with its Keras model, and reading "
                             "it with Keras needs TensorFlow: pip install 'kcaptcha[train]', or export it with "
                             "bin/export where TensorFlow is installed.")
        import tensorflow as tf

        model = self.model
        expected = (None, self.height, self.width, 1)
        if tuple(model.input_shape) != expected:
            raise ValueError(f"Damaged model folder {self.model_dir!r}: the model takes {model.input_shape}, "
                             f"but metadata.json says {expected}")
        function = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        return lambda batch: function(batch).numpy()

    @property
    def model(self):
        """The Keras model (loaded on first use when inference runs on ONNX)."""
        if self._model is None:
            self._model = export.load_keras_model(self.model_dir)
        return self._model

    def __repr__(self) -> str:
        return (f"Recognizer(name={self.name!r}, backend={self.backend!r}, charset={self.vocab.charset!r}, "
                f"length={self.vocab.min_length}-{self.vocab.max_length}, size={self.width}x{self.height}, "
                f"tta={self.tta}, tta_below={self.tta_below})")

    def preprocess(self, item: ImageLike, index: int = 0) -> np.ndarray:
        """One image -> float32 [height, width] in [0, 1] (`kcaptcha.data.images`' contract, with the model's
        colour selection and GIF frame blending)."""
        return images.to_model_input(item, self.width, self.height, index, self.preprocessing)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """The model's raw outputs for an already preprocessed float32 batch [n, height, width(, 1)] (with an
        int8 model and its float32 fallback, the int8 model's)."""
        return self._infer(_four_d(batch))

    def read(self, batch: np.ndarray) -> List[Prediction]:
        """Readings of a preprocessed batch, without warped copies: with an int8 model and its float32
        fallback, those the int8 model reads with a confidence under `fallback_below` are read in float32."""
        batch = _four_d(batch)
        readings = self.decode(self._infer(batch))
        if self._fallback is None:
            return readings
        return decoding.with_fallback(readings, self.fallback_below,
                                      lambda unsure: self.decode(self._fallback(batch[unsure])))

    def predict_batch(self, batch: np.ndarray) -> List[Prediction]:
        """Readings of an already preprocessed float32 batch [n, height, width(, 1)].

        With `tta`, each image read with a confidence under `tta_below` (every image for 1) is read again in
        `tta` warped copies, in one more model call, and its readings vote (`kcaptcha.reading.tta`).
        """
        readings = self.read(batch)
        if not self.tta:
            return readings
        unsure = [i for i, reading in enumerate(readings)
                  if reading.confidence < self.tta_below or self.tta_below >= 1.0]
        if not unsure:
            return readings
        batch = _four_d(batch)[unsure, ..., 0]
        copies = self.read(np.concatenate([warped_copies.warp(batch, w) for w in self._warps]))
        voted = warped_copies.vote([[readings[i] for i in unsure]] +
                                   [copies[k * len(batch):(k + 1) * len(batch)] for k in range(self.tta)])
        for i, reading in zip(unsure, voted):
            readings[i] = reading
        return readings

    def decode(self, logits: np.ndarray) -> List[Prediction]:
        return decoding.decode(logits, self.output, self.vocab)

    def predict(self, items: Union[ImageLike, Sequence[ImageLike]], batch_size: int = 256):
        """Reads one image (returns a `Prediction`) or a sequence / 4-D array of them (returns a list).

        Images of any size and mode are converted to grayscale (after the model's colour selection, with an
        animated GIF's frames combined as the model was trained) and resized to the model's input.
        """
        single = not isinstance(items, (list, tuple)) and not (isinstance(items, np.ndarray) and items.ndim == 4)
        items = [items] if single else list(items)
        results = []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            batch = np.stack([self.preprocess(item, start + i) for i, item in enumerate(chunk)])
            results.extend(self.predict_batch(batch))
        return results[0] if single else results


def _four_d(batch: np.ndarray) -> np.ndarray:
    batch = np.asarray(batch, dtype=np.float32)
    return batch[..., None] if batch.ndim == 3 else batch


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def load_model(name_or_path: str = "digits", backend: str = "auto", spin: bool = True, tta: int = 0,
               tta_below: float = warped_copies.UNSURE_BELOW) -> Recognizer:
    """Loads a saved model folder, or a model by name (`./saved_models/<name>`, else a shipped one).

    Args:
        name_or_path: a model name (e.g. "digits") or a saved model folder.
        backend: "auto" runs the exported ONNX model (int8 when it agrees with the Keras model, or when it
            does with the readings it is unsure of read again on the float32 export) when the folder has
            one and onnxruntime is installed, else Keras; "keras" or "onnx" to choose. "int8"
            runs the int8 export even where it reads fewer captchas like Keras than `export.MIN_AGREEMENT`
            (its agreement is in metadata.json's "export" entry): faster, slightly different readings.
            "float" runs the float32 export alone.
        spin: onnxruntime's threads spin briefly between calls (its default), for the lowest latency per
            call; pass False where other work needs the cores between calls (bin/serve does).
        tta: also read each image the model is unsure of in this many slightly warped copies and keep the
            text they agree on (`kcaptcha.reading.tta`): fewer misreads for models trained on few images.
        tta_below: the images read in copies are those read with a confidence under this; 1 for every
            image (`tta + 1` times the work). The default (`kcaptcha.reading.tta.UNSURE_BELOW`) reads 8% of the
            images in copies for captcha_images_v2 models, 18% for the shipped alnum, with almost all the
            gain of reading every one.
    """
    return Recognizer(saving.resolve_model_dir(name_or_path), backend, spin, tta, tta_below)
