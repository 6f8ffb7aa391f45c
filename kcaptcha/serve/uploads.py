"""Uploaded images: size and pixel limits, safe decoding to model input, saving for relabelling."""

import dataclasses
import io
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from kcaptcha.files import FORMAT_EXTENSIONS, create_new

MAX_IMAGE_BYTES = 5 * 1024 * 1024  # one uploaded image
MAX_REQUEST_BYTES = 16 * 1024 * 1024  # one request to /v1/.../predict (base64 JSON is 4/3 of the bytes)
MAX_IMAGE_PIXELS = 4096 * 4096  # checked from the header, so a decompression bomb is never decoded
MAX_IMAGES_PER_REQUEST = 64
# The formats training reads, plus WEBP (saved as PNG). No TIFF: a large attack surface, and no captchas.
# MPO is left out because Pillow opens it with its JPEG opener and has no opener named "MPO".
ACCEPTED_FORMATS = tuple(name for name in FORMAT_EXTENSIONS if name != "MPO") + ("WEBP",)


class ApiError(Exception):
    """A client error, answered as JSON `{"error": code, "detail": message}` with HTTP `status`."""

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


@dataclasses.dataclass
class Upload:
    data: bytes
    label: str  # names the upload in error messages; never part of a file name
    image_format: str = ""  # set by `decode_upload`


def decode_upload(recognizer, upload: Upload, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Upload bytes -> the model's float32 [height, width] input; records the detected format."""
    if not upload.data:
        raise ApiError(400, "empty_image", f"{upload.label} is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(upload.data), formats=ACCEPTED_FORMATS)
        width, height = image.size  # read from the header: no pixel is decoded yet
        if width * height > max_pixels:
            raise ApiError(413, "too_many_pixels", f"{upload.label} is {width}x{height} pixels; the limit is "
                                                   f"{max_pixels} pixels")
        image.load()
        upload.image_format = image.format
        return recognizer.preprocess(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ApiError(413, "too_many_pixels", f"{upload.label}: {error}") from None
    except UnidentifiedImageError:
        raise ApiError(400, "not_an_image", f"{upload.label} is not an image in a supported format "
                                            f"({', '.join(ACCEPTED_FORMATS)})") from None
    except ApiError:
        raise
    except Exception as error:  # PIL's decoders raise many kinds of error on hostile or damaged files
        raise ApiError(400, "corrupt_image", f"{upload.label} is corrupt or truncated "
                                             f"({type(error).__name__}: {error})") from None


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
    for attempt in range(1000):
        path = os.path.join(folder, f"{stem}-{attempt}{extension}" if attempt else f"{stem}{extension}")
        try:
            create_new(path, data)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"No free name for {stem}{extension} in {folder}")
