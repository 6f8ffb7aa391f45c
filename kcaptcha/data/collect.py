"""Fetching captchas from an HTTP endpoint (the parent's `remote_url`): polite, checked, never twice.

`collect(url, count, output_dir)` asks `url` for images until `output_dir` holds `count` of them. Each new
image is saved whole as `<first 16 hex digits of its SHA-256>.<ext>`, so the same image never lands twice
and an interrupted run continues where it stopped. Requests are spaced by `interval` seconds, time out,
and are retried with exponential backoff; a response that is not a complete image (an error status, HTML,
an empty body, a truncated file, one over `max_bytes`) is counted and skipped. With a `recognizer`, each
image gets a row in `labels.csv`: the model's reading and confidence, status `unreviewed`, ready for a
person to accept or correct (`kcaptcha.data.labels`).
"""

import collections
import hashlib
import io
import os
import time
import urllib.error
import urllib.request
from typing import Callable, Optional

from PIL import Image

from kcaptcha import files
from kcaptcha.data import labels

MAX_BYTES = 5 * 1024 * 1024
USER_AGENT = "kcaptcha-collect"


class Rejected(Exception):
    """A response that is not a usable image; `reason` is what the summary counts it under."""

    def __init__(self, reason: str, detail: str, retry: bool = False):
        super().__init__(detail)
        self.reason, self.retry = reason, retry


def fetch(url: str, timeout: float, max_bytes: int = MAX_BYTES) -> bytes:
    """One image from `url`; raises `Rejected` naming what was wrong."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            kind = response.headers.get_content_type()
            if not kind.startswith("image/") and kind != "application/octet-stream":
                raise Rejected("not_an_image", f"content type {kind!r}")
            data = response.read(max_bytes + 1)
    except urllib.error.HTTPError as error:
        raise Rejected(f"http_{error.code}", str(error), retry=error.code >= 500 or error.code == 429) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
        raise Rejected("unreachable", str(getattr(error, "reason", error)), retry=True) from None
    if not data:
        raise Rejected("empty", "an empty body")
    if len(data) > max_bytes:
        raise Rejected("too_large", f"over {max_bytes} bytes")
    return data


def check_image(data: bytes) -> str:
    """The extension to save `data` under; raises `Rejected` unless it is a complete image training can read."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format
            image.load()
    except Exception as error:  # noqa: BLE001 - PIL raises many kinds on damaged data
        raise Rejected("not_an_image", f"not a complete image ({type(error).__name__})") from None
    if image_format not in files.FORMAT_EXTENSIONS:
        raise Rejected("unsupported_format", f"{image_format} images are not read by training")
    return files.FORMAT_EXTENSIONS[image_format]


def collect(url: str, count: int, output_dir: str, recognizer=None, interval: float = 1.0, timeout: float = 10.0,
            retries: int = 5, backoff: float = 1.0, max_bytes: int = MAX_BYTES, progress: Optional[Callable] = None,
            sleep: Callable[[float], None] = time.sleep) -> dict:
    """Fetches from `url` until `output_dir` holds `count` images; returns what happened.

    Raises `RuntimeError` after `retries` failed attempts in a row (the endpoint is down or wrong).
    """
    os.makedirs(output_dir, exist_ok=True)
    held = {os.path.splitext(name)[0] for name in os.listdir(output_dir) if files.is_image_name(name)}
    summary = collections.Counter()
    if recognizer is not None:
        _label_missing(output_dir, recognizer)
    failures = 0
    while len(held) < count:
        if summary["requests"]:
            sleep(interval)
        summary["requests"] += 1
        try:
            data = fetch(url, timeout, max_bytes)
            extension = check_image(data)
            failures = 0
        except Rejected as rejected:
            summary[f"rejected_{rejected.reason}"] += 1
            failures += 1
            if failures >= retries:
                raise RuntimeError(f"{failures} failed requests in a row to {url}; the last: {rejected.reason} "
                                   f"({rejected}). {len(held)} of {count} images are in {output_dir}.") from None
            if rejected.retry:
                sleep(backoff * 2 ** (failures - 1))
            continue
        name = hashlib.sha256(data).hexdigest()[:16]
        if name in held:
            summary["duplicates"] += 1
            continue
        try:
            files.create_new(os.path.join(output_dir, name + extension), data)
        except FileExistsError:  # another collector wrote it meanwhile
            summary["duplicates"] += 1
            continue
        held.add(name)
        summary["saved"] += 1
        if recognizer is not None:
            _label(output_dir, recognizer, [name + extension])
        if progress:
            progress(len(held), count)
    return {"in_folder": len(held), **summary}


def _label(output_dir: str, recognizer, names) -> None:
    readings = recognizer.predict([os.path.join(output_dir, name) for name in names])
    labels.update(output_dir, {name: {"label": p.text, "confidence": p.confidence, "status": "unreviewed"}
                               for name, p in zip(names, readings)})


def _label_missing(output_dir: str, recognizer) -> None:
    """Labels images a previous run saved but did not get to label (it was interrupted in between)."""
    path = os.path.join(output_dir, labels.FILE)
    listed = {row.filename for row in labels.read(path)} if os.path.exists(path) else set()
    missing = sorted(n for n in os.listdir(output_dir) if files.is_image_name(n) and n not in listed)
    for start in range(0, len(missing), 256):
        _label(output_dir, recognizer, missing[start:start + 256])
