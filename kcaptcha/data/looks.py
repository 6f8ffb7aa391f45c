"""Synthetic looks that only a model's preprocessing reads (`kcaptcha.data.images.Preprocessing`).

- `colour_decoy`: the label in one colour (drawn from the model's colour selection, red without one) among
  1 to 3 decoy characters in other colours, on a light, nearly gray background. The label is the
  characters of that colour, left to right: "type the characters in red".
- `gif`: an animated GIF of 2 or 3 frames over the same background, each frame showing some of the
  characters in their places and the first never all of them, as captchas that flash their characters do.
  Its frames combined by minimum (`--gif_frames=min`) show the whole label.
"""

import colorsys
import io
from typing import List, Sequence

import numpy as np
from PIL import Image

from kcaptcha.data import colours, styles

DEFAULT_COLOUR = "red"
FRAME_MILLISECONDS = 200


def _light_background(rng, width: int, height: int) -> Image.Image:
    """One of `styles`' backgrounds, desaturated so that no colour selection takes it for text."""
    pixels = np.asarray(styles._background(rng, width, height), np.float32)
    gray = pixels.mean(axis=-1, keepdims=True)
    return Image.fromarray(np.clip(gray + (pixels - gray) * 0.25, 0, 255).astype(np.uint8), "RGB")


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> tuple:
    """OpenCV units (hue 0-180, saturation and value 0-255) -> an RGB tuple."""
    rgb = colorsys.hsv_to_rgb((hue % 180.0) / 180.0, saturation / 255.0, value / 255.0)
    return tuple(int(round(c * 255)) for c in rgb)


def label_colour(rng, spec: str) -> tuple:
    """A colour inside the selection `spec`, away from its saturation and value edges (antialiased edges of
    a glyph lie between it and the background)."""
    (h_low, h_high), (s_low, s_high), (v_low, v_high) = rng.choice(colours.parse(spec))
    span = h_high - h_low if h_low <= h_high else h_high + 180 - h_low
    for _ in range(50):
        colour = _hsv_to_rgb(h_low + rng.uniform(0, span), rng.uniform(s_low + 0.4 * (s_high - s_low), s_high),
                             rng.uniform(v_low + 0.3 * (v_high - v_low), v_high))
        if colours.mask(np.asarray([[colour]], np.float32), spec)[0, 0]:
            return colour
    raise ValueError(f"colour {spec!r}: could not draw a colour inside it; give a wider range")


def decoy_colour(rng, spec: str) -> tuple:
    """A colour outside the selection `spec`, dark enough to read on a light background."""
    for _ in range(100):
        colour = _hsv_to_rgb(rng.uniform(0, 180), rng.choice((rng.uniform(0, 40), rng.uniform(80, 255))),
                             rng.uniform(30, 200))
        if not colours.mask(np.asarray([[colour]], np.float32), spec)[0, 0]:
            return colour
    raise ValueError(f"colour {spec!r} selects nearly every colour: no decoy colour is left outside it")


def colour_decoy(label: str, rng, width: int, height: int, fonts: Sequence[str], charset: str,
                 spec: str = "") -> Image.Image:
    """`label` in a colour of `spec` (red when empty) with decoy characters of `charset` in other colours."""
    spec = spec or DEFAULT_COLOUR
    image = _light_background(rng, width, height)
    text, text_colours = list(label), [label_colour(rng, spec)] * len(label)
    for _ in range(rng.randint(1, 3)):
        place = rng.randint(0, len(text))
        text.insert(place, rng.choice(charset))
        text_colours.insert(place, decoy_colour(rng, spec))
    styles._draw_text(image, "".join(text), rng, rng.choice(list(fonts)), text_colours)
    return image


def gif_frames(label: str, rng, width: int, height: int, fonts: Sequence[str]) -> List[Image.Image]:
    """The frames of `label` split across 2 or 3 frames; the first never shows every character."""
    background = _light_background(rng, width, height)
    colour = tuple(rng.randint(0, 110) for _ in range(3))
    count = min(rng.randint(2, 3), max(2, len(label)))
    owner = [rng.randrange(count) for _ in label]
    if all(frame == 0 for frame in owner):
        owner[rng.randrange(len(label))] = rng.randrange(1, count)
    font = rng.choice(list(fonts))
    state = rng.getstate()  # each frame draws the same layout: characters keep their places
    frames = []
    for frame in range(count):
        rng.setstate(state)
        image = background.copy()
        styles._draw_text(image, label, rng, font, [colour if o == frame else None for o in owner])
        frames.append(image)
    return frames


def encode_gif(frames: Sequence[Image.Image]) -> bytes:
    """Frames -> the bytes of an endlessly looping animated GIF."""
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=list(frames[1:]),
                   duration=FRAME_MILLISECONDS, loop=0)
    return buffer.getvalue()
