"""Captcha looks beyond the `captcha` library's one: fonts found on the machine, backgrounds, colours,
spacing, lines, dots, blur and warping, each drawn at random per image from a seeded generator.

`find_fonts(charset)` lists TrueType fonts that can draw every character of a charset: the `captcha`
library's own, matplotlib's DejaVu family (installed with kcaptcha[train]) and the system's
(`/usr/share/fonts`, `/Library/Fonts`, `C:\\Windows\\Fonts`), leaving out symbol and math fonts.
`draw(label, rng, width, height, fonts)` renders one captcha in a randomly chosen look; `without=` leaves
nuisances out of it, to measure what each one costs.
"""

import functools
import glob
import math
import os
from typing import Collection, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_FOLDERS = ("/usr/share/fonts", "/usr/local/share/fonts", os.path.expanduser("~/.fonts"), "/Library/Fonts",
                "C:\\Windows\\Fonts")
SKIP_FONT_WORDS = ("math", "stix", "symbol", "dingbat", "emoji", "cmex", "cmsy", "cmmi", "display", "extralight")


def _candidate_fonts() -> List[str]:
    found = []
    try:
        import captcha

        found += glob.glob(os.path.join(os.path.dirname(captcha.__file__), "data", "*.ttf"))
    except ImportError:
        pass
    try:
        import matplotlib

        found += glob.glob(os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf",
                                        "DejaVu*.ttf"))
    except ImportError:
        pass
    for folder in FONT_FOLDERS:
        found += glob.glob(os.path.join(folder, "**", "*.ttf"), recursive=True)
    unique = {}
    for path in found:  # the same font installed twice counts once
        unique.setdefault(os.path.basename(path).lower(), path)
    return sorted(path for name, path in unique.items() if not any(word in name for word in SKIP_FONT_WORDS))


def _draws_every_character(path: str, charset: str) -> bool:
    try:
        font = ImageFont.truetype(path, 40)
    except OSError:
        return False
    missing = _glyph(font, "\uffff")  # what the font draws for a character it lacks
    return all(_glyph(font, c) not in (missing, b"") for c in charset)


def _glyph(font, char: str) -> bytes:
    mask = font.getmask(char)
    return bytes(mask) if mask.size[0] and mask.size[1] else b""


@functools.lru_cache(maxsize=None)
def find_fonts(charset: str) -> Tuple[str, ...]:
    """The fonts on this machine that draw every character of `charset` (sorted paths)."""
    return tuple(path for path in _candidate_fonts() if _draws_every_character(path, charset))


NUISANCES = ("overlap", "rotation", "lines", "dots", "warp", "blur")


def draw(label: str, rng, width: int, height: int, fonts: Sequence[str], without: Collection[str] = ()) -> Image.Image:
    """`label` in one random look: background, font, colours, spacing, then lines, dots, blur, warp.

    `without` names NUISANCES to leave out (for ablations): the same random numbers are drawn, so the rest
    of the captcha is the one `draw` makes without it. "overlap" keeps characters at least a tenth of a
    glyph apart; "rotation" keeps them upright."""
    unknown = set(without) - set(NUISANCES)
    if unknown:
        raise ValueError(f"without takes {', '.join(NUISANCES)}. Received: {sorted(unknown)}")
    background = _background(rng, width, height)
    text_colour = tuple(rng.randint(0, 110) for _ in range(3))
    image = background.copy()
    _draw_text(image, label, rng, rng.choice(list(fonts)), text_colour, without)
    draw_ = ImageDraw.Draw(image)
    scratch = ImageDraw.Draw(image.copy()) if {"lines", "dots"} & set(without) else None  # for left-out ones
    for _ in range(rng.choice((0, 0, 1, 2, 3))):
        points = [(rng.uniform(-0.1, 1.1) * width, rng.uniform(0, 1) * height) for _ in range(rng.randint(2, 4))]
        (scratch if "lines" in without else draw_).line(
            points, fill=text_colour if rng.random() < 0.5 else _random_colour(rng, 0, 160),
            width=rng.randint(1, max(1, height // 25)))
    for _ in range(rng.choice((0, 0, 20, 80, 200))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.5, 1.5)
        (scratch if "dots" in without else draw_).ellipse((x - r, y - r, x + r, y + r),
                                                           fill=_random_colour(rng, 0, 200))
    if rng.random() < 0.3:
        warped = _warp(image, rng)
        image = image if "warp" in without else warped
    if rng.random() < 0.3:
        radius = rng.uniform(0.3, 1.0)
        image = image if "blur" in without else image.filter(ImageFilter.GaussianBlur(radius))
    return image


@functools.lru_cache(maxsize=512)
def _font(path: str, size: int):
    return ImageFont.truetype(path, size)


def _random_colour(rng, low: int, high: int) -> tuple:
    return tuple(rng.randint(low, high) for _ in range(3))


def _background(rng, width: int, height: int) -> Image.Image:
    kind = rng.choice(("plain", "gradient", "speckle"))
    base = np.array(_random_colour(rng, 170, 255), np.float32)
    if kind == "plain":
        pixels = np.broadcast_to(base, (height, width, 3))
    elif kind == "gradient":
        other = np.array(_random_colour(rng, 170, 255), np.float32)
        ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
        pixels = np.broadcast_to(base + (other - base) * ramp, (height, width, 3))
    else:
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, 18.0, (height, width, 1)).astype(np.float32)
        pixels = base + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _draw_text(image: Image.Image, label: str, rng, font_path: str, colour, without: Collection[str] = ()) -> None:
    """Draws `label` in `colour`, or in per-character colours (a list; None leaves a character's place
    empty), drawing the same random numbers either way."""
    colours = list(colour) if isinstance(colour, list) else [colour] * len(label)
    width, height = image.size
    font = _font(font_path, max(8, int(height * rng.uniform(0.55, 0.85))))
    glyphs = []
    for char in label:
        left, top, right, bottom = font.getbbox(char)
        glyph = Image.new("L", (right - left + 4, bottom - top + 4), 0)
        ImageDraw.Draw(glyph).text((2 - left, 2 - top), char, font=font, fill=255)
        angle = rng.uniform(-25, 25)
        glyphs.append(glyph.rotate(0 if "rotation" in without else angle, resample=Image.BILINEAR, expand=True))
    spacing = rng.uniform(-0.15, 0.25)  # overlapping (negative) to loose, in glyph widths
    if "overlap" in without:
        spacing = max(spacing, 0.1)
    total = sum(g.size[0] for g in glyphs) * (1 + spacing) - glyphs[-1].size[0] * spacing
    scale = min(1.0, 0.95 * width / max(total, 1))
    x = (width - total * scale) / 2 + rng.uniform(-0.05, 0.05) * width
    for glyph, glyph_colour in zip(glyphs, colours):
        if scale < 1.0:
            glyph = glyph.resize((max(1, int(glyph.size[0] * scale)), max(1, int(glyph.size[1] * scale))))
        y = (height - glyph.size[1]) / 2 + rng.uniform(-0.12, 0.12) * height
        if glyph_colour is not None:
            image.paste(Image.new("RGB", glyph.size, glyph_colour), (int(x), int(y)), glyph)
        x += glyph.size[0] * (1 + spacing)


def _warp(image: Image.Image, rng) -> Image.Image:
    """A gentle sine wave along the width, as many captchas bend their text."""
    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    amplitude, period, phase = rng.uniform(1.0, height / 12), rng.uniform(0.5, 1.5) * width, rng.uniform(0, 6.3)
    shifts = (amplitude * np.sin(2 * math.pi * np.arange(width) / period + phase)).astype(int)
    rows = np.clip(np.arange(height)[:, None] + shifts[None, :], 0, height - 1)
    return Image.fromarray(pixels[rows, np.arange(width)[None, :]], "RGB")
