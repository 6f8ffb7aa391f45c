"""The one preprocessing contract: any image -> the model's input, in TensorFlow and in PIL/numpy.

Every image becomes float32 [height, width(, 1)] in [0, 1]: decode (PNG, JPEG, GIF's first frame, BMP),
composite any alpha channel on white, convert to ITU-R 601 grayscale, scale 16-bit images to 8 bits,
resize to (height, width) with an antialiased bilinear filter. `decode_image` does it in a `tf.data`
pipeline (training); `to_model_input` with PIL for single images (reading, serving). Tests hold the two
equal within a small tolerance across sizes, modes and formats.
"""

import io
import os
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

# tf.image.rgb_to_grayscale's weights (ITU-R 601): how every kcaptcha model sees colour.
LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)
ImageLike = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


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


def gray_pixels(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> float32 grayscale [h, w] in 0..255, transparency composited on white.

    One conversion per image: no PIL -> numpy -> PIL -> numpy round trip.
    """
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
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


def gray_bytes(image: Image.Image) -> np.ndarray:
    """`gray_pixels` rounded to uint8 [h, w]: a quarter of the memory, for captchas kept in arrays (the
    captcha pool) that become model inputs as value / 255, within half a gray level of `to_model_input`."""
    return np.clip(np.round(gray_pixels(image)), 0, 255).astype(np.uint8)


def _gray(rgb: np.ndarray) -> np.ndarray:
    # In float like the TensorFlow path.
    return (rgb @ np.asarray(LUMA_WEIGHTS, np.float32)).astype(np.float32)


def array_to_gray(array: np.ndarray, label: str) -> np.ndarray:
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
    return gray_pixels(Image.fromarray(array, mode))


def to_model_input(item: ImageLike, width: int, height: int, index: int = 0) -> np.ndarray:
    """One image (path, bytes, PIL image or array) -> float32 [height, width] in [0, 1]."""
    if isinstance(item, Image.Image):
        pixels = gray_pixels(item)
    elif isinstance(item, np.ndarray):
        pixels = array_to_gray(item, describe(item, index))
    elif isinstance(item, (str, os.PathLike, bytes, bytearray, memoryview)):
        pixels = gray_pixels(open_image(item, index))
    else:
        raise TypeError(f"image #{index}: expected a path, bytes, a PIL image or a numpy array. "
                        f"Received: {type(item).__name__}")
    if pixels.shape != (height, width):  # antialiased when shrinking, as TF's
        pixels = np.asarray(Image.fromarray(pixels, "F").resize((width, height), Image.BILINEAR), np.float32)
    return np.clip(pixels * np.float32(1.0 / 255.0), 0.0, 1.0)


def decode_image(data, height: int, width: int):
    """Encoded image bytes (a string tensor) -> float32 [height, width, 1] in [0, 1], in TensorFlow."""
    import tensorflow as tf

    data = tf.convert_to_tensor(data, tf.string)
    # TensorFlow's BMP decoder reads palette indices as gray levels and rejects 1-bit files: BMPs go to PIL.
    return tf.cond(tf.equal(tf.strings.substr(data, 0, 2), b"BM"),
                   lambda: _decode_with_pil(data, height, width),
                   lambda: _decode_with_tf(data, height, width))


def _decode_with_pil(data, height: int, width: int):
    import tensorflow as tf

    def decode(payload):  # a 0-d numpy array holding the bytes
        return to_model_input(payload.item() if isinstance(payload, np.ndarray) else payload, width, height)[..., None]

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
