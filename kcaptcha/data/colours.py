"""Colour selection before grayscale: "type the characters in red".

A selection is a named colour (`red`) or an HSV range (`hsv:0-20,100-255,80-255`), several joined with `+`
(`red+hsv:100-130,80-255,50-255`). HSV is in OpenCV's units, as ddddocr's colour filter takes them: hue
0-179 (half degrees), saturation and value 0-255; a hue range whose start is above its end wraps around
red (`hsv:170-10,...`). Pixels in the selection become black and every other pixel white, so a model reads
the selected characters alone whatever their brightness. The same numpy function runs in training and in
reading (`kcaptcha.data.images`), so both see the same pixels.
"""

import functools
from typing import Tuple

import numpy as np

Range = Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]  # (hue, saturation, value), each (low, high)

# ddddocr's table, in OpenCV's units; saturated colours need saturation and value of at least 50.
NAMED = {
    "red": (((0, 10), (50, 255), (50, 255)), ((170, 179), (50, 255), (50, 255))),
    "orange": (((11, 20), (50, 255), (50, 255)),),
    "yellow": (((21, 34), (50, 255), (50, 255)),),
    "green": (((35, 80), (50, 255), (50, 255)),),
    "cyan": (((81, 99), (50, 255), (50, 255)),),
    "blue": (((100, 130), (50, 255), (50, 255)),),
    "purple": (((131, 169), (50, 255), (50, 255)),),
    "black": (((0, 179), (0, 255), (0, 50)),),
    "gray": (((0, 179), (0, 49), (51, 200)),),
    "white": (((0, 179), (0, 30), (201, 255)),),
}
_LIMITS = ((0, 179, "hue"), (0, 255, "saturation"), (0, 255, "value"))
HELP = (f"Keep only the pixels of this colour before grayscale ('' for none): a name ({', '.join(NAMED)}) or "
        "an HSV range 'hsv:H1-H2,S1-S2,V1-V2' in OpenCV's units (hue 0-179, wrapping when H1 > H2; saturation "
        "and value 0-255), several joined with '+'. Recorded with the model, which applies it when reading.")


@functools.lru_cache(maxsize=64)
def parse(spec: str) -> Tuple[Range, ...]:
    """The HSV ranges of a selection; `ValueError` naming the part that is wrong."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"colour must be a colour name or an HSV range. Received: colour={spec!r}")
    ranges = []
    for part in spec.lower().split("+"):
        part = part.strip()
        if part in NAMED:
            ranges.extend(NAMED[part])
        elif part.startswith("hsv:"):
            ranges.append(_hsv_range(part, spec))
        else:
            raise ValueError(f"colour: {part!r} is neither a colour name ({', '.join(NAMED)}) nor an HSV range "
                             f"like 'hsv:0-20,100-255,80-255'. Received: colour={spec!r}")
    return tuple(ranges)


def _hsv_range(part: str, spec: str) -> Range:
    bounds = part[len("hsv:"):].split(",")
    if len(bounds) != 3:
        raise ValueError(f"colour: {part!r} needs three ranges, hue, saturation and value, as "
                         f"'hsv:H1-H2,S1-S2,V1-V2'. Received: colour={spec!r}")
    result = []
    for text, (lowest, highest, name) in zip(bounds, _LIMITS):
        try:
            low, high = (int(v) for v in text.split("-"))
        except ValueError:
            raise ValueError(f"colour: the {name} range {text!r} of {part!r} is not 'LOW-HIGH' in whole numbers. "
                             f"Received: colour={spec!r}") from None
        if not (lowest <= low <= highest and lowest <= high <= highest):
            raise ValueError(f"colour: the {name} range {text!r} of {part!r} must lie within {lowest}-{highest}. "
                             f"Received: colour={spec!r}")
        if name != "hue" and low > high:
            raise ValueError(f"colour: the {name} range {text!r} of {part!r} starts above its end "
                             f"(only hue wraps around). Received: colour={spec!r}")
        result.append((low, high))
    return tuple(result)


def hsv(rgb: np.ndarray) -> np.ndarray:
    """float RGB [..., 3] in 0..255 -> float32 HSV [..., 3] in OpenCV's units (hue 0..180, s and v 0..255)."""
    rgb = np.round(np.asarray(rgb, np.float32))
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    spread = high - low
    safe = np.where(spread > 0, spread, 1.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    degrees = np.where(high == r, (g - b) / safe * 60.0,
                       np.where(high == g, 120.0 + (b - r) / safe * 60.0, 240.0 + (r - g) / safe * 60.0))
    hue = np.where(spread > 0, np.mod(degrees, 360.0) / 2.0, 0.0)
    saturation = np.where(high > 0, spread / np.where(high > 0, high, 1.0) * 255.0, 0.0)
    return np.stack([hue, saturation, high], axis=-1).astype(np.float32)


def mask(rgb: np.ndarray, spec: str) -> np.ndarray:
    """Which pixels of float RGB [h, w, 3] (0..255) are in the selection `spec`: bool [h, w]."""
    values = hsv(rgb)
    hue = np.mod(np.floor(values[..., 0] + 0.5), 180.0)  # whole half-degrees, 180 wrapping to 0
    saturation, value = values[..., 1], values[..., 2]
    selected = np.zeros(values.shape[:-1], bool)
    for (h_low, h_high), (s_low, s_high), (v_low, v_high) in parse(spec):
        in_hue = ((hue >= h_low) & (hue <= h_high)) if h_low <= h_high else ((hue >= h_low) | (hue <= h_high))
        selected |= in_hue & (saturation >= s_low) & (saturation <= s_high) & (value >= v_low) & (value <= v_high)
    return selected


def select(rgb: np.ndarray, spec: str) -> np.ndarray:
    """float RGB [h, w, 3] (0..255) -> float32 [h, w]: 0 (black) where the colour is selected, else 255."""
    return np.where(mask(rgb, spec), 0.0, 255.0).astype(np.float32)
