"""Synthetic captchas from the `captcha` library: reproducible files and an endless stream of batches.

captcha 0.7 draws every random choice from the `secrets` module, which cannot be seeded. We swap in a
`random.Random` seeded from (seed, index) for each image, so image `index` of seed `seed` is the same
bytes whichever process draws it and in whatever order.
"""

import contextlib
import io
import multiprocessing
import os
import random
import sys
import threading
from typing import List, Optional, Sequence, Tuple

import numpy as np
from captcha import image as captcha_image
from PIL import Image

from kcaptcha import files
from kcaptcha.config import STYLES
from kcaptcha.data import images, looks, styles
from kcaptcha.data import labels as labels_csv
from kcaptcha.files import create_new
from kcaptcha.reading import arithmetic

ARITHMETIC_ROTATION = (-12, 12)  # degrees each character of an arithmetic captcha turns by, at most
_BASE_FONT_SIZES = (42, 50, 56)  # the captcha library's defaults, made for 60-pixel-high images
_patch_lock = threading.Lock()


class SeededSecrets(random.Random):
    """A seeded stand-in for the parts of the `secrets` module that captcha uses."""

    def randbelow(self, exclusive_upper_bound: int) -> int:
        return self.randrange(exclusive_upper_bound)

    def randbits(self, k: int) -> int:
        return self.getrandbits(k)


@contextlib.contextmanager
def _seeded_captcha(rng: SeededSecrets):
    with _patch_lock:
        original = captcha_image.secrets
        captcha_image.secrets = rng
        try:
            yield
        finally:
            captcha_image.secrets = original


# The two looks of --style=varied: the `captcha` library's, and kcaptcha's own (`kcaptcha.data.styles`).
LOOK_CAPTCHA_LIBRARY = "captcha library"
LOOK_KCAPTCHA = "kcaptcha"


def font_names(fonts: Sequence[str]) -> List[str]:
    """The file names of font paths, without their folders (which differ from machine to machine)."""
    return [os.path.basename(font) for font in fonts]


class CaptchaRenderer:
    """Draws labelled captchas of one size and charset; `render(index)` is a pure function of the seed.

    Styles: "captcha" is the `captcha` library's look (with `fonts`, or its own font); "varied" draws
    half of the images in that look with every font that can draw the charset (`fonts`, or those found
    on the machine) and half in other looks (`kcaptcha.data.styles`): backgrounds, colours, spacing, lines,
    dots, blur, warping. "arithmetic" draws expressions like `3+8=?` (`kcaptcha.reading.arithmetic`) in the
    `captcha` library's look; their labels are the expressions, whatever `min_length` and `max_length` say.
    "colour_decoy" and "gif" are `kcaptcha.data.looks`' (the label in the colour of `preprocessing`'s
    selection among decoys; the characters split across a GIF's frames). `preprocessing` is how the model
    reads them (`render_gray`).
    """

    def __init__(self, charset: str, min_length: int, max_length: int, width: int, height: int,
                 seed: int = 0, fonts: Sequence[str] = (), style: str = "captcha",
                 preprocessing: images.Preprocessing = images.PLAIN):
        if style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}. Received: style={style!r}")
        self.args = (charset, min_length, max_length, width, height, seed, tuple(fonts), style, preprocessing)
        self.charset, self.min_length, self.max_length = charset, min_length, max_length
        self.width, self.height, self.seed, self.style = width, height, seed, style
        if style == "arithmetic" and set(arithmetic.CHARSET) - set(charset):
            raise ValueError(f"style=arithmetic draws {arithmetic.CHARSET!r}, so the charset must hold those "
                             f"characters. Received: charset={charset!r}")
        self.preprocessing = preprocessing
        own_looks = style in ("varied", "colour_decoy", "gif")
        self.fonts = tuple(fonts) or (styles.find_fonts(charset) if own_looks else ())
        self.names_carry_labels = files.name_carries(charset)  # else the labels go in a labels.csv
        if own_looks and not self.fonts:
            raise ValueError(f"No font on this machine draws every character of {charset!r}; give --fonts.")
        font_sizes = tuple(max(8, round(s * height / 60)) for s in _BASE_FONT_SIZES)
        self._captcha = captcha_image.ImageCaptcha(
            width=width, height=height, fonts=list(self.fonts) or None, font_sizes=font_sizes)
        if style == "arithmetic":  # a '+' turned by the library's 30 degrees is most of the way to a '×'
            self._captcha.character_rotate = ARITHMETIC_ROTATION

    @property
    def extension(self) -> str:
        return ".gif" if self.style == "gif" else ".png"

    @classmethod
    def from_config(cls, config, seed: Optional[int] = None) -> "CaptchaRenderer":
        return cls(config.charset, config.min_length, config.max_length, config.width, config.height,
                   config.seed if seed is None else seed, config.fonts, config.style,
                   images.Preprocessing.from_config(config))

    @classmethod
    def from_metadata(cls, metadata: dict, seed: int) -> "CaptchaRenderer":
        """Captchas of a saved model's task, in the look it was trained on (its fonts still on this machine)."""
        config = metadata.get("config") or {}
        fonts = [font for font in config.get("fonts", []) if os.path.isfile(font)]
        return cls(metadata["charset"], int(metadata["min_length"]), int(metadata["max_length"]),
                   int(metadata["width"]), int(metadata["height"]), seed, fonts, config.get("style", "captcha"),
                   images.Preprocessing.from_metadata(metadata))

    def _draw_label(self, index: int) -> Tuple[SeededSecrets, str]:
        rng = SeededSecrets(f"kcaptcha/{self.seed}/{index}")
        if self.style == "arithmetic":
            return rng, arithmetic.draw(rng)
        length = rng.randint(self.min_length, self.max_length)
        return rng, "".join(rng.choice(self.charset) for _ in range(length))

    def label(self, index: int) -> str:
        """The label of sample `index`, without drawing its image."""
        return self._draw_label(index)[1]

    def _draw_look(self, index: int) -> Tuple[SeededSecrets, str, str]:
        rng, label = self._draw_label(index)
        if self.style in ("colour_decoy", "gif"):
            return rng, label, self.style
        own = self.style == "varied" and rng.random() < 0.5
        return rng, label, LOOK_KCAPTCHA if own else LOOK_CAPTCHA_LIBRARY

    def look(self, index: int) -> str:
        """The look sample `index` is drawn in: `LOOK_CAPTCHA_LIBRARY` or `LOOK_KCAPTCHA` (or the style's own,
        "colour_decoy" or "gif"), without drawing it."""
        return self._draw_look(index)[2]

    def render(self, index: int, without: Sequence[str] = ()) -> Tuple[str, Image.Image]:
        """Returns (label, RGB image, or a multi-frame GIF for the "gif" style) for sample `index`; `without`
        (`styles.NUISANCES`) leaves nuisances out of kcaptcha's own look, for ablations."""
        rng, label, look = self._draw_look(index)
        if look == LOOK_KCAPTCHA:
            return label, styles.draw(label, rng, self.width, self.height, self.fonts, without)
        if look == "colour_decoy":
            return label, looks.colour_decoy(label, rng, self.width, self.height, self.fonts, self.charset,
                                             self.preprocessing.colour)
        if look == "gif":  # decoded from its bytes, palettes and all, as a saved file reads
            frames = looks.gif_frames(label, rng, self.width, self.height, self.fonts)
            return label, Image.open(io.BytesIO(looks.encode_gif(frames)))
        with _seeded_captcha(rng):
            image = self._captcha.generate_image(label)
        return label, image

    def encode(self, index: int) -> Tuple[str, bytes]:
        """(label, the bytes of a file `<label>...<extension>`) for sample `index`: PNG, or an animated GIF."""
        if self.style == "gif":
            rng, label, _ = self._draw_look(index)
            return label, looks.encode_gif(looks.gif_frames(label, rng, self.width, self.height, self.fonts))
        label, image = self.render(index)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return label, buffer.getvalue()

    def render_gray(self, index: int) -> Tuple[str, np.ndarray]:
        """Returns (label, uint8 [height, width]) for sample `index`: the captcha as the model sees a picture
        (`kcaptcha.data.images`, with the renderer's `preprocessing`), so a captcha drawn in memory reads as
        the same one saved to a file."""
        label, image = self.render(index)
        return label, images.gray_bytes(image, self.preprocessing)


# Worker-process state: one renderer per process, built once by the pool initializer.
_worker_renderer: Optional[CaptchaRenderer] = None


def _init_worker(renderer_args):
    global _worker_renderer
    _worker_renderer = CaptchaRenderer(*renderer_args)


def file_name(renderer: CaptchaRenderer, index: int, digits: int) -> str:
    """`<label>_<seed>-<index>.png`, or `<seed>-<index>.png` where file names cannot carry the charset's labels."""
    name = f"{renderer.seed}-{index:0{digits}d}{renderer.extension}"
    return f"{renderer.label(index)}_{name}" if renderer.names_carry_labels else name


def _write_one(task) -> Tuple[str, str]:
    """Renders sample `index` into `output_dir`; returns (status, path). Never overwrites."""
    index, output_dir, digits = task
    path = os.path.join(output_dir, file_name(_worker_renderer, index, digits))
    if os.path.exists(path):  # known from the index alone: a re-run draws nothing
        return "exists", path
    _, payload = _worker_renderer.encode(index)
    try:
        create_new(path, payload)  # another process may have written it meanwhile
    except FileExistsError:
        return "exists", path
    return "written", path


def render_chunk(task) -> Tuple[np.ndarray, List[str]]:
    """In a worker process: captchas `first` .. `first + count - 1` of the worker's renderer, grayscale
    [n, h, w], or RGB [n, h, w, 3] with `colour`."""
    first, count, colour = task
    labels, arrays = [], []
    for index in range(first, first + count):
        if colour:
            label, image = _worker_renderer.render(index)
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        else:
            label, pixels = _worker_renderer.render_gray(index)
        labels.append(label)
        arrays.append(pixels)
    return np.stack(arrays), labels


@contextlib.contextmanager
def _without_main_module():
    """Hides `__main__` from multiprocessing while workers start, so they never re-import the caller's script.

    Workers only run this module's functions. Re-importing the main script (what spawn and forkserver do)
    would re-run a script that lacks an `if __name__ == "__main__":` guard, and each worker would then try
    to start workers of its own, forever.
    """
    main = sys.modules.get("__main__")
    saved = {name: getattr(main, name) for name in ("__file__", "__spec__") if hasattr(main, name)}
    try:
        for name in saved:
            setattr(main, name, None) if name == "__spec__" else delattr(main, name)
        yield
    finally:
        for name, value in saved.items():
            setattr(main, name, value)


def worker_pool(renderer: CaptchaRenderer, workers: int):
    """Processes that each hold a copy of `renderer`, for `render_chunk` and file-writing tasks."""
    # forkserver: never fork a process that has TensorFlow's threads running.
    context = multiprocessing.get_context("forkserver")
    with _without_main_module():
        return context.Pool(workers, initializer=_init_worker, initargs=(renderer.args,))


def default_workers(workers: int = 0) -> int:
    return workers if workers > 0 else (os.cpu_count() or 1)


def write_images(renderer: CaptchaRenderer, output_dir: str, count: int, workers: int = 0,
                 progress: bool = True) -> dict:
    """Writes `count` captchas as `<label>_<seed>-<index>.png` (`.gif` for the "gif" style); returns counts of
    written/existing files.

    Where file names cannot carry the charset (`files.name_carries`: a `?`), the files are
    `<seed>-<index>.png` and their labels rows of the folder's labels.csv, every one accepted.
    """
    from tqdm import tqdm

    digits = max(6, len(str(count - 1)))
    if not renderer.names_carry_labels and os.path.isdir(output_dir) and files.list_images(output_dir) \
            and not os.path.isfile(os.path.join(output_dir, labels_csv.FILE)):
        raise ValueError(f"{output_dir} holds images labelled by their names; the labels of {renderer.charset!r} "
                         f"go in a labels.csv, which would leave those unlabelled. Choose a new --output_dir.")
    os.makedirs(output_dir, exist_ok=True)
    tasks = [(index, output_dir, digits) for index in range(count)]
    summary = {"written": 0, "exists": 0}
    with worker_pool(renderer, default_workers(workers)) as pool:
        results = pool.imap_unordered(_write_one, tasks, chunksize=64)
        for status, _ in tqdm(results, total=count, desc="generate", unit="img",
                              disable=None if progress else True):  # None: only on a terminal
            summary[status] += 1
    if not renderer.names_carry_labels:
        labels_csv.update(output_dir, {file_name(renderer, index, digits): {"label": renderer.label(index),
                                                                            "status": "accepted"}
                                       for index in range(count)})
    return summary


def render_arrays(renderer: CaptchaRenderer, count: int, first: int = 0, workers: int = 0,
                  colour: bool = False) -> Tuple[np.ndarray, List[str]]:
    """`count` grayscale captchas (RGB with `colour`), samples `first` .. `first + count - 1`, rendered in
    parallel."""
    chunk = 64
    tasks = [(start, min(chunk, first + count - start), colour) for start in range(first, first + count, chunk)]
    with worker_pool(renderer, default_workers(workers)) as pool:
        parts = pool.map(render_chunk, tasks)
    labels = [label for p in parts for label in p[1]]
    return np.concatenate([p[0] for p in parts]), labels
