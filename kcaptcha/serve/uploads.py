"""Uploaded images: errors for clients, reading headers before pixels, decoding to model input, saving them.

Decoding is in two steps so that limits hold before any work is spent: `probe` reads an image's header
(format and size, no pixels), the caller checks the request's pixel budget, then `decode` reads the pixels.
"""

import contextlib
import dataclasses
import io
import logging
import os
import threading
from typing import Iterator, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from kcaptcha.files import claim_free_name, create_new, FORMAT_EXTENSIONS

logger = logging.getLogger("kcaptcha.serve")
# The formats training reads, plus WEBP (saved as PNG). No TIFF: a large attack surface, and no captchas.
# MPO is left out because Pillow opens it with its JPEG opener and has no opener named "MPO".
ACCEPTED_FORMATS = tuple(name for name in FORMAT_EXTENSIONS if name != "MPO") + ("WEBP",)


class ApiError(Exception):
    """A client error (or a deliberate 503), answered as JSON `{"error": code, "detail": message}`.

    Args:
        headers: extra response headers (`Retry-After`, `Connection: close`).
    """

    def __init__(self, status: int, code: str, detail: str, headers: Optional[dict] = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}


@dataclasses.dataclass
class Upload:
    data: bytes
    label: str  # names the upload in error messages; never part of a file name
    image_format: str = ""  # set by `probe`
    size: tuple = (0, 0)  # (width, height), set by `probe`
    image: Optional[Image.Image] = dataclasses.field(default=None, repr=False)  # opened by `probe`, not loaded


@contextlib.contextmanager
def _client_errors(upload: Upload) -> Iterator[None]:
    """Turns what PIL raises on hostile or damaged files into the client's `ApiError`."""
    try:
        yield
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ApiError(413, "too_many_pixels", f"{upload.label}: {error}") from None
    except UnidentifiedImageError:
        raise ApiError(400, "not_an_image", f"{upload.label} is not an image in a supported format "
                                            f"({', '.join(ACCEPTED_FORMATS)})") from None
    except Exception as error:  # PIL's decoders raise many kinds of error on hostile or damaged files
        raise ApiError(400, "corrupt_image", f"{upload.label} is corrupt or truncated "
                                             f"({type(error).__name__}: {error})") from None


def probe(upload: Upload, max_pixels: int) -> int:
    """Reads the upload's header (no pixel is decoded): records its format and size; returns its pixel count.
    An upload already probed is not read again."""
    if upload.image is not None:
        return upload.size[0] * upload.size[1]
    if not upload.data:
        raise ApiError(400, "empty_image", f"{upload.label} is empty (0 bytes)")
    with _client_errors(upload):
        image = Image.open(io.BytesIO(upload.data), formats=ACCEPTED_FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise ApiError(413, "too_many_pixels", f"{upload.label} is {width}x{height} pixels; the limit is "
                                                   f"{max_pixels} pixels")
        upload.image, upload.image_format, upload.size = image, image.format, (width, height)
    return width * height


def decode(recognizer, upload: Upload) -> np.ndarray:
    """A probed upload -> the model's float32 [height, width] input."""
    with _client_errors(upload):
        image, upload.image = upload.image, None  # the decoded pixels are not kept with the upload
        image.load()
        return recognizer.preprocess(image)


def save_upload(folder: str, text: str, upload: Upload, timestamp: str) -> str:
    """Writes `<folder>/<text>_<timestamp>.<ext>`, adding `-1`, `-2`... rather than overwriting a file.

    Formats that training reads are saved as sent; the others (WEBP) become PNG.
    """
    os.makedirs(folder, exist_ok=True)
    extension, data = FORMAT_EXTENSIONS.get(upload.image_format), upload.data
    if extension is None:
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).save(buffer, "PNG")
        extension, data = FORMAT_EXTENSIONS["PNG"], buffer.getvalue()
    stem = "".join("-" if c in "/\\\0" else c for c in text) + "_" + timestamp

    def create(name: str) -> bool:
        try:
            create_new(os.path.join(folder, name), data)
            return True
        except FileExistsError:
            return False

    return os.path.join(folder, claim_free_name(folder, stem + extension, create, tries=1000))


class UploadSaver:
    """Saves answered uploads under `<root>/<model>/` until the folder holds `max_bytes`.

    An image smaller than a quarter of the model's input in width or height is not saved: it cannot be a
    captcha the model reads, and would only pollute the training data made from these folders.
    """

    def __init__(self, root: str, max_bytes: int):
        self.root, self.max_bytes = root, max_bytes
        self.used = sum(os.path.getsize(os.path.join(folder, name))
                        for folder, _, names in os.walk(root) for name in names)
        self._lock, self._warned = threading.Lock(), False

    def save(self, model: str, recognizer, uploads, predictions, timestamp: str) -> None:
        folder = os.path.join(self.root, model)
        for upload, prediction in zip(uploads, predictions):
            width, height = upload.size
            if width * 4 < recognizer.width or height * 4 < recognizer.height:
                continue
            with self._lock:
                if self.used + len(upload.data) > self.max_bytes:
                    if not self._warned:
                        logger.warning("Not saving uploads any more: %s holds %d bytes, the quota is %d bytes",
                                       self.root, self.used, self.max_bytes)
                        self._warned = True
                    return
                self.used += len(upload.data)
            try:
                save_upload(folder, prediction.text, upload, timestamp)
            except Exception:  # a full disk must not stop recognition: say so in the log
                logger.exception("Could not save an upload to %s", folder)
