"""`Recognizer`: a saved model plus its metadata; `predict()` on paths, bytes, PIL images or arrays.

Runs on onnxruntime when the folder has an export (no TensorFlow needed), else on Keras.
"""

import dataclasses
import functools
import os
from typing import List, Optional, Sequence, Union

import numpy as np

from kcaptcha.data import images
from kcaptcha.data.images import ImageLike
from kcaptcha.export import onnx as export
from kcaptcha.export import saving
from kcaptcha.reading import arithmetic, decoding
from kcaptcha.reading import tta as warped_copies  # `tta` is the argument's name
from kcaptcha.reading.decoding import Prediction
from kcaptcha.reading.vocab import Vocab

BACKENDS = ("auto", "keras", "onnx", "int8", "float")

__all__ = ["BACKENDS", "Prediction", "Recognizer", "load_model"]

Charsets = Union[None, str, Sequence[Optional[str]]]  # one for the batch, or one per image (None: the default)


class Recognizer:
    """A loaded recogniser. Create with `kcaptcha.load_model(name_or_path)`."""

    def __init__(self, model_dir: str, backend: str = "auto", spin: bool = True,
                 tta: int = warped_copies.DEFAULT_COPIES, tta_below: float = warped_copies.UNSURE_BELOW,
                 charset: Optional[str] = None):
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
        self._restrictions = {}  # charset -> (Vocab, logit columns), for the charsets chosen at reading time
        self.charset = None if charset is None else self.restriction(charset)[0].charset
        self.arithmetic = arithmetic.is_arithmetic(self.vocab.charset)
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
        # A partial, not a lambda: TensorFlow counts the traces of every tf.function of the same code together,
        # and warned of "retracing" once a process had made a few Recognizers.
        function = tf.function(functools.partial(model, training=False), reduce_retracing=True)
        return lambda batch: function(batch).numpy()

    @property
    def model(self):
        """The Keras model (loaded on first use when inference runs on ONNX)."""
        if self._model is None:
            self._model = export.load_keras_model(self.model_dir)
        return self._model

    def __repr__(self) -> str:
        reads = f", reads only {self.charset!r}" if self.charset else ""
        return (f"Recognizer(name={self.name!r}, backend={self.backend!r}, charset={self.vocab.charset!r}{reads}, "
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

    def read(self, batch: np.ndarray, charset: Charsets = None) -> List[Prediction]:
        """Readings of a preprocessed batch, without warped copies: with an int8 model and its float32
        fallback, those the int8 model reads with a confidence under `fallback_below` are read in float32."""
        batch = _four_d(batch)
        charsets = self._per_image(charset, len(batch))
        readings = self.decode(self._infer(batch), charsets)
        if self._fallback is None:
            return readings
        return decoding.with_fallback(readings, self.fallback_below, lambda unsure: self.decode(
            self._fallback(batch[unsure]), [charsets[i] for i in unsure]))

    def predict_batch(self, batch: np.ndarray, charset: Charsets = None) -> List[Prediction]:
        """Readings of an already preprocessed float32 batch [n, height, width(, 1)].

        With `tta`, each image read with a confidence under `tta_below` (every image for 1) is read again in
        `tta` warped copies, in one more model call, and its readings vote (`kcaptcha.reading.tta`).

        Args:
            charset: the characters to read (see `load_model`), for the whole batch or one per image; None
                for the recogniser's own.
        """
        charsets = self._per_image(charset, len(batch))
        readings = self.read(batch, charsets)
        unsure = [i for i, reading in enumerate(readings)
                  if reading.confidence < self.tta_below or self.tta_below >= 1.0] if self.tta else []
        if unsure:
            batch = _four_d(batch)[unsure, ..., 0]
            copies = self.read(np.concatenate([warped_copies.warp(batch, w) for w in self._warps]),
                               [charsets[i] for i in unsure] * self.tta)
            voted = warped_copies.vote([[readings[i] for i in unsure]] +
                                       [copies[k * len(batch):(k + 1) * len(batch)] for k in range(self.tta)])
            for i, reading in zip(unsure, voted):
                readings[i] = reading
        if self.arithmetic:
            readings = [dataclasses.replace(r, **dict(zip(("answer", "answer_error"), arithmetic.answer(r.text))))
                        for r in readings]
        return readings

    def restriction(self, charset: str):
        """(Vocab, logit columns) that read only `charset`'s characters; a `ValueError` naming any the model
        cannot read."""
        if not isinstance(charset, str):
            return self.vocab.restrict(charset, ctc=self.output == "ctc")  # raises, naming what it received
        if charset not in self._restrictions:
            if len(self._restrictions) >= 64:  # charsets come from requests: keep the most recent few
                self._restrictions.pop(next(iter(self._restrictions)))
            self._restrictions[charset] = self.vocab.restrict(charset, ctc=self.output == "ctc")
        return self._restrictions[charset]

    def decode(self, logits: np.ndarray, charset: Charsets = None) -> List[Prediction]:
        """Readings of a batch of logits, each of the characters of its charset only: the other characters'
        classes are left out before the best path and the softmax, so confidences are shares of the characters
        read (for sigmoid outputs, each class's own probability)."""
        charsets = self._per_image(charset, len(logits))
        if all(c is None for c in charsets):
            return decoding.decode(logits, self.output, self.vocab)
        readings: List[Optional[Prediction]] = [None] * len(logits)
        for chosen in dict.fromkeys(charsets):  # one decoding per charset, in a stable order
            rows = [i for i, c in enumerate(charsets) if c == chosen]
            vocab, columns = (self.vocab, slice(None)) if chosen is None else self.restriction(chosen)
            for i, reading in zip(rows, decoding.decode(np.asarray(logits)[rows][..., columns], self.output, vocab)):
                readings[i] = reading
        return readings

    def _per_image(self, charset: Charsets, count: int) -> List[Optional[str]]:
        if charset is None or isinstance(charset, str):
            return [charset or self.charset] * count
        if len(charset) != count:
            raise ValueError(f"charset must be one string for the batch or one per image ({count}). "
                             f"Received: {len(charset)} charsets")
        return [c or self.charset for c in charset]

    def predict(self, items: Union[ImageLike, Sequence[ImageLike]], batch_size: int = 256,
                charset: Optional[str] = None):
        """Reads one image (returns a `Prediction`) or a sequence / 4-D array of them (returns a list).

        Images of any size and mode are converted to grayscale (after the model's colour selection, with an
        animated GIF's frames combined as the model was trained) and resized to the model's input. `charset`
        reads these images with only those characters (see `load_model`).
        """
        single = not isinstance(items, (list, tuple)) and not (isinstance(items, np.ndarray) and items.ndim == 4)
        items = [items] if single else list(items)
        results = []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            batch = np.stack([self.preprocess(item, start + i) for i, item in enumerate(chunk)])
            results.extend(self.predict_batch(batch, charset))
        return results[0] if single else results


def _four_d(batch: np.ndarray) -> np.ndarray:
    batch = np.asarray(batch, dtype=np.float32)
    return batch[..., None] if batch.ndim == 3 else batch


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def load_model(name_or_path: str = "digits", backend: str = "auto", spin: bool = True,
               tta: int = warped_copies.DEFAULT_COPIES, tta_below: float = warped_copies.UNSURE_BELOW,
               charset: Optional[str] = None) -> Recognizer:
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
        charset: read only these characters (any order), e.g. "0123456789" with a 0-9a-z model on a site that
            draws digits: the other characters' classes are left out before decoding (CTC keeps its blank), so
            a digit is never read as a letter and confidences are shares of these characters. A character the
            model cannot read is a `ValueError` naming it. `predict(..., charset=)` chooses per call.
    """
    return Recognizer(saving.resolve_model_dir(name_or_path), backend, spin, tta, tta_below, charset)
