"""The one preprocessing contract: any image -> the model's input, in TensorFlow and in PIL/numpy.

Every image becomes float32 [height, width(, 1)] in [0, 1]: decode (PNG, JPEG, GIF, BMP), composite any
alpha channel on white, convert to ITU-R 601 grayscale, scale 16-bit images to 8 bits, resize to
(height, width) with an antialiased bilinear filter. `decode_image` does it in a `tf.data` pipeline
(training); `to_model_input` with PIL for single images (reading, serving). Tests hold the two equal
within a small tolerance across sizes, modes and formats.

A model may also choose (`Preprocessing`, recorded in its metadata): a colour selection before grayscale
(`kcaptcha.data.colours`), and how an animated GIF's frames are combined: the first frame alone (the
default), or every frame's grayscale combined pixel by pixel (`min` keeps dark characters of every frame,
`max` light ones, `mean` averages). With either, training decodes with the same numpy function as reading
(through `tf.numpy_function`), so the two give the same array for the same file, to the bit.
"""

import dataclasses
import io
import os
from typing import Optional, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from kcaptcha.data import colours

# tf.image.rgb_to_grayscale's weights (ITU-R 601): how every kcaptcha model sees colour.
LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)
ImageLike = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
GIF_FRAMES = ("first", "min", "max", "mean")
GIF_FRAMES_HELP = ("How an animated GIF's frames make one image: 'first' (the first frame alone), or every "
                   "frame's grayscale combined pixel by pixel: 'min' (dark characters of every frame), 'max' "
                   "(light ones) or 'mean'. Recorded with the model, which applies it when reading.")
MAX_FRAMES = 100  # a captcha has a few frames; more is a wrong or hostile file, not worth the time to combine


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What a model chose beyond the contract's fixed steps: a colour selection and GIF frame blending."""

    colour: str = ""
    gif_frames: str = "first"

    def __post_init__(self):
        if self.gif_frames not in GIF_FRAMES:
            raise ValueError(f"gif_frames must be one of {', '.join(GIF_FRAMES)}. "
                             f"Received: gif_frames={self.gif_frames!r}")
        if self.colour:
            colours.parse(self.colour)

    @classmethod
    def from_config(cls, config) -> "Preprocessing":
        return cls(config.colour, config.gif_frames)

    @classmethod
    def from_metadata(cls, metadata: dict) -> "Preprocessing":
        """A saved model's choice; models saved before these options read as they always did."""
        return cls(metadata.get("colour", ""), metadata.get("gif_frames", "first"))

    @property
    def plain(self) -> bool:
        return not self.colour and self.gif_frames == "first"


PLAIN = Preprocessing()


def describe(item, index: int = 0) -> str:
    """How error messages name an input: its path, or its position and type."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    return f"image #{index} ({type(item).__name__})"


def open_image(item, index: int = 0) -> Image.Image:
    """A decoded PIL image from a path or encoded bytes; clear errors naming the input."""
    try:
        if isinstance(item, (str, os.PathLike)):
            with open(item, "rb") as f:
                payload = f.read()
        else:
            payload = bytes(item)
        if not payload:
            raise ValueError(f"{describe(item, index)} is empty (0 bytes)")
        image = Image.open(io.BytesIO(payload))
        image.load()
        return image
    except Image.DecompressionBombError as error:
        raise ValueError(f"{describe(item, index)} is too large to decode safely ({error})") from None
    except UnidentifiedImageError:
        raise ValueError(f"{describe(item, index)} is not an image PIL can read") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"Image not found: {describe(item, index)}") from None
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{describe(item, index)} is corrupt or truncated ({error})") from None


def gray_pixels(image: Image.Image, preprocessing: Optional[Preprocessing] = None) -> np.ndarray:
    """Any PIL mode -> float32 grayscale [h, w] in 0..255, transparency composited on white; with
    `preprocessing`, after its colour selection, and an animated image's frames combined as it says.

    One conversion per image: no PIL -> numpy -> PIL -> numpy round trip.
    """
    preprocessing = preprocessing or PLAIN
    frames = getattr(image, "n_frames", 1)
    if frames > 1 and preprocessing.gif_frames != "first":
        if frames > MAX_FRAMES:
            raise ValueError(f"{getattr(image, 'filename', '') or 'the image'} has {frames} frames; "
                             f"--gif_frames={preprocessing.gif_frames} combines at most {MAX_FRAMES}")
        pixels, limit = frames * image.width * image.height, Image.MAX_IMAGE_PIXELS
        if limit and pixels > limit:  # PIL's decompression-bomb limit, which it checks one frame at a time
            raise ValueError(f"{getattr(image, 'filename', '') or 'the image'} has {frames} frames of "
                             f"{image.width}x{image.height}: {pixels} pixels to combine, over PIL's limit of "
                             f"{limit} (PIL.Image.MAX_IMAGE_PIXELS)")
        layers = []
        for index in range(frames):
            image.seek(index)
            layers.append(_frame_gray(image, preprocessing.colour))
        image.seek(0)
        combine = {"min": np.min, "max": np.max, "mean": np.mean}[preprocessing.gif_frames]
        return combine(np.stack(layers), axis=0).astype(np.float32)
    if frames > 1:
        image.seek(0)
    return _frame_gray(image, preprocessing.colour)


def _frame_gray(image: Image.Image, colour: str) -> np.ndarray:
    if not colour:
        return _plain_gray(image)
    if image.mode in ("RGB", "P", "RGBA", "LA", "PA", "La", "RGBa", "CMYK", "YCbCr", "LAB", "HSV"):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:4] * (1.0 / 255.0)
        return colours.select(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha), colour)
    gray = _plain_gray(image)  # no colour to select from: gray levels, which black, gray and white still select
    return colours.select(np.repeat(gray[..., None], 3, axis=-1), colour)


def _plain_gray(image: Image.Image) -> np.ndarray:
    if image.mode in _SIXTEEN_BIT_MODES:  # as TensorFlow reads a 16-bit PNG: 65535 is white
        return np.clip(np.asarray(image, dtype=np.float32) * (255.0 / 65535.0), 0.0, 255.0)
    if image.mode == "F":
        return np.clip(np.asarray(image, np.float32), 0.0, 255.0)
    if image.mode in ("P", "RGBA", "LA", "PA", "La", "RGBa"):  # palettes may hold transparency
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:4] * (1.0 / 255.0)
        return _gray(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha))
    if image.mode in ("RGB", "CMYK", "YCbCr", "LAB", "HSV"):
        # TensorFlow's weights exactly: PIL's own RGB -> F (0.299, 0.587, 0.114) moved a test model's
        # confidences by up to 0.0035 against the TensorFlow path.
        return _gray(np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.float32))
    return np.asarray(image.convert("L") if image.mode != "L" else image, dtype=np.float32)


def gray_bytes(image: Image.Image, preprocessing: Optional[Preprocessing] = None) -> np.ndarray:
    """`gray_pixels` rounded to uint8 [h, w]: a quarter of the memory, for captchas kept in arrays (the
    captcha pool) that become model inputs as value / 255, within half a gray level of `to_model_input`."""
    return np.clip(np.round(gray_pixels(image, preprocessing)), 0, 255).astype(np.uint8)


def _gray(rgb: np.ndarray) -> np.ndarray:
    # In float like the TensorFlow path.
    return (rgb @ np.asarray(LUMA_WEIGHTS, np.float32)).astype(np.float32)


def array_to_gray(array: np.ndarray, label: str, preprocessing: Optional[Preprocessing] = None) -> np.ndarray:
    """A [h, w], [h, w, 1|3|4] array (uint8, or float in [0, 1]) -> float32 grayscale [h, w] in 0..255."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or min(array.shape[:2]) < 1:
        hint = ("; for a batch of gray images [n, h, w], add a channel axis (images[..., None]) or pass a list"
                if array.ndim == 3 else "")
        raise ValueError(f"{label}: expected an array of shape [h, w], [h, w, 1], [h, w, 3] or [h, w, 4]. "
                         f"Received shape {array.shape}{hint}")
    if array.dtype != np.uint8:
        array = array.astype(np.float64)
        if array.size and array.max() <= 1.0:
            array = array * 255.0
        array = np.clip(array + 0.5, 0, 255).astype(np.uint8)
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[array.shape[-1] if array.ndim == 3 else 2]
    return gray_pixels(Image.fromarray(array, mode), preprocessing)


def to_model_input(item: ImageLike, width: int, height: int, index: int = 0,
                   preprocessing: Optional[Preprocessing] = None) -> np.ndarray:
    """One image (path, bytes, PIL image or array) -> float32 [height, width] in [0, 1]; `preprocessing`
    the model's colour selection and GIF frame blending, if any."""
    if isinstance(item, Image.Image):
        pixels = gray_pixels(item, preprocessing)
    elif isinstance(item, np.ndarray):
        pixels = array_to_gray(item, describe(item, index), preprocessing)
    elif isinstance(item, (str, os.PathLike, bytes, bytearray, memoryview)):
        pixels = gray_pixels(open_image(item, index), preprocessing)
    else:
        raise TypeError(f"image #{index}: expected a path, bytes, a PIL image or a numpy array. "
                        f"Received: {type(item).__name__}")
    if pixels.shape != (height, width):  # antialiased when shrinking, as TF's
        pixels = np.asarray(Image.fromarray(pixels, "F").resize((width, height), Image.BILINEAR), np.float32)
    return np.clip(pixels * np.float32(1.0 / 255.0), 0.0, 1.0)


def decode_image(data, height: int, width: int, preprocessing: Optional[Preprocessing] = None):
    """Encoded image bytes (a string tensor) -> float32 [height, width, 1] in [0, 1], in TensorFlow.

    With a colour selection or GIF frame blending, every image is decoded by the numpy function that reading
    runs (`to_model_input`), so training and reading see the same array.
    """
    import tensorflow as tf

    preprocessing = preprocessing or PLAIN
    data = tf.convert_to_tensor(data, tf.string)
    if not preprocessing.plain:
        return _decode_with_pil(data, height, width, preprocessing)
    # TensorFlow's BMP decoder reads palette indices as gray levels and rejects 1-bit files: BMPs go to PIL.
    return tf.cond(tf.equal(tf.strings.substr(data, 0, 2), b"BM"),
                   lambda: _decode_with_pil(data, height, width, preprocessing),
                   lambda: _decode_with_tf(data, height, width))


def _decode_with_pil(data, height: int, width: int, preprocessing: Preprocessing = PLAIN):
    import tensorflow as tf

    def decode(payload):  # a 0-d numpy array holding the bytes
        payload = payload.item() if isinstance(payload, np.ndarray) else payload
        return to_model_input(payload, width, height, preprocessing=preprocessing)[..., None]

    return tf.ensure_shape(tf.numpy_function(decode, [data], tf.float32, stateful=False), (height, width, 1))


def _decode_with_tf(data, height: int, width: int):
    import tensorflow as tf

    # uint16 keeps 16-bit PNGs exact; 8-bit images are scaled by 257, so both end up as value / max.
    image = tf.io.decode_image(data, channels=0, expand_animations=False, dtype=tf.uint16)
    image = tf.cast(tf.ensure_shape(image, [None, None, None]), tf.float32) * (1.0 / 65535.0)

    def composite(color, alpha):
        return color * alpha + (1.0 - alpha)

    image = tf.switch_case(tf.shape(image)[-1] - 1, [  # by channel count: L, LA, RGB, RGBA
        lambda: image[..., :1],
        lambda: composite(image[..., :1], image[..., 1:2]),
        lambda: tf.image.rgb_to_grayscale(image[..., :3]),
        lambda: tf.image.rgb_to_grayscale(composite(image[..., :3], image[..., 3:4])),
    ])
    image = tf.ensure_shape(image, [None, None, 1])
    same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], [height, width]))
    return tf.cond(  # resizing costs as much as decoding: skip it when the size already fits
        same_size,
        lambda: tf.reshape(image, (height, width, 1)),
        lambda: tf.clip_by_value(tf.image.resize(image, (height, width), antialias=True), 0.0, 1.0))
