"""Fetching captchas from an HTTP endpoint (the parent's `remote_url`): polite, checked, never twice.

`collect(url, count, output_dir)` asks `url` for images until `output_dir` holds `count` of them. Each new
image is saved whole as `<first 16 hex digits of its SHA-256>.<ext>`, so the same image never lands twice
and an interrupted run continues where it stopped. Requests are spaced by `interval` seconds, time out,
and are retried with exponential backoff; a response that is not a complete image (an error status, HTML,
an empty body, a truncated file, one over `max_bytes`) is counted and skipped. With a `recognizer`, each
image gets a row in `labels.csv`: the model's reading and confidence, status `unreviewed`, ready for a
person to accept or correct (`kcaptcha.data.labels`), and the folder's `labels.json` records the model's
charset and lengths, which the review checks labels against. `ProgressLine` reports a run as it goes.
"""

import collections
import hashlib
import io
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Callable, Optional, TextIO

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

    `progress(held, summary, failures)`, when given, is called before each request and at the end, with the
    images held, the counts so far (as returned) and the failed requests in a row (`ProgressLine`).
    Raises `RuntimeError` after `retries` failed attempts in a row (the endpoint is down or wrong).
    """
    os.makedirs(output_dir, exist_ok=True)
    held = {os.path.splitext(name)[0] for name in os.listdir(output_dir) if files.is_image_name(name)}
    summary = collections.Counter()
    if recognizer is not None:
        labels.write_rules(output_dir, labels.LabelRules.of_model(recognizer))
        _label_missing(output_dir, recognizer)
    failures = 0
    progress = progress or (lambda *_: None)
    while len(held) < count:
        progress(len(held), summary, failures)
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
    progress(len(held), summary, failures)
    return {"in_folder": len(held), **summary}


class ProgressLine:
    """Reports a `collect` run on `stream`, one line at a time, the same on a terminal and in a log: a line
    when it starts, at most one every `every` seconds while it runs, and one when the folder is full.

        collect: 37/60 images (+25 in 31 s, 0.81/s, about 28 s left); 40 requests, 3 failed (2 http_500,
        1 not_an_image), 1 duplicate

    Args:
        count: the images the folder should hold.
        stream: where the lines go (default: standard error).
        every: the fewest seconds between two lines while it runs.
        clock: seconds, for the rate (tests pass their own).
    """

    def __init__(self, count: int, stream: Optional[TextIO] = None, every: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.count, self.stream, self.every, self.clock = count, stream, every, clock
        self.started = self.last = None
        self.first_held = 0

    def __call__(self, held: int, summary: collections.Counter, failures: int = 0) -> None:
        now = self.clock()
        if self.started is None:
            self.started, self.last, self.first_held = now, now, held
            return self._write(f"collect: {held}/{self.count} images in the folder, "
                               f"{max(self.count - held, 0)} to fetch")
        if held < self.count and now - self.last < self.every:
            return None
        self.last = now
        self._write(self.line(held, summary, failures, now))

    def line(self, held: int, summary: collections.Counter, failures: int, now: float) -> str:
        """The line for `held` images and `summary` at `now`."""
        seconds, added = now - self.started, held - self.first_held
        rate = added / seconds if seconds > 0 else 0.0
        timing = f"+{added} in {_duration(seconds)}, {rate:.2f}/s"
        if held < self.count and rate > 0:
            timing += f", about {_duration((self.count - held) / rate)} left"
        rejected = {key[len("rejected_"):]: n for key, n in sorted(summary.items()) if key.startswith("rejected_")}
        text = f"collect: {held}/{self.count} images ({timing}); {summary['requests']} requests"
        if rejected:
            text += f", {sum(rejected.values())} failed (" + ", ".join(f"{n} {r}" for r, n in rejected.items()) + ")"
        if summary["duplicates"]:
            text += f", {summary['duplicates']} duplicate{'s' if summary['duplicates'] > 1 else ''}"
        if failures:
            text += f"; {failures} failed in a row, retrying"
        return text

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(text + "\n")
        stream.flush()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min {seconds % 60:02d} s"


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
