"""Request bodies -> uploads: bounded reading (bytes, time, memory), multipart parts, base64 JSON, raw images.

The event loop only receives the body; multipart and JSON are parsed in a thread, so a body built to be
slow to parse (hundreds of thousands of parts, deep JSON) never stalls the other requests.
"""

import asyncio
import base64
import binascii
import json
import time
from typing import List, Optional, Tuple

import python_multipart
from fastapi import Request
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect

from kcaptcha.serve.uploads import ApiError, Upload


INLINE_PARSE_BYTES = 64 * 1024  # a captcha or a few; parsing one takes microseconds


class ClientGone(Exception):
    """The client closed the connection before the answer: logged in one line, answered to nobody."""


class _Deadline:
    """Cancels the current task after `seconds` and raises `asyncio.TimeoutError` instead: Python 3.11's
    `asyncio.timeout`, for 3.10 too (`asyncio.wait_for` would cost a task per request)."""

    def __init__(self, seconds: float):
        self.seconds, self.expired = seconds, False

    async def __aenter__(self):
        task = asyncio.current_task()
        self._handle = asyncio.get_running_loop().call_later(self.seconds, self._expire, task)

    def _expire(self, task):
        self.expired = True
        task.cancel()

    async def __aexit__(self, kind, error, traceback):
        self._handle.cancel()
        if self.expired and kind is asyncio.CancelledError:
            raise asyncio.TimeoutError() from None
        return False


def media_type(request: Request) -> Tuple[str, dict]:
    """The request's media type, lower-cased (media types are case-insensitive), and its parameters."""
    essence, options = parse_options_header(request.headers.get("content-type", ""))
    return essence.decode("latin-1"), options


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The whole request body, held against the request's share of the bytes in flight.

    Raises:
        ApiError: 413 as soon as the body is known to pass `limit` bytes; 408 when it has not arrived in
            `timeout` seconds; 503 when the server holds as many body bytes as it may.
        ClientGone: the client closed the connection first.
    """
    allowance = request.state.body_allowance
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"The request is {int(declared)} bytes; the limit is {limit} bytes",
                       {"Connection": "close"})
    if declared.isdigit():
        allowance.grow(int(declared))  # all at once: a body that cannot fit is turned away before it is sent
    chunks, received, started = [], 0, time.monotonic()
    try:
        async with _Deadline(timeout):
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise ApiError(413, "too_large", f"The request is over the limit of {limit} bytes",
                                   {"Connection": "close"})
                if not declared.isdigit():
                    allowance.grow(len(chunk))
                chunks.append(chunk)
    except asyncio.TimeoutError:
        raise ApiError(408, "body_timeout", f"The request body did not arrive within {timeout:g} s "
                                            f"({received} bytes in {time.monotonic() - started:.1f} s)",
                       {"Connection": "close"}) from None
    except ClientDisconnect:
        raise ClientGone(f"after {received} bytes of the body") from None
    return b"".join(chunks)


async def parent_upload(request: Request, limit: int, timeout: float, max_parts: int) -> Optional[Upload]:
    """The multipart file `image_file` of a `POST /b` body, or None when there is none."""
    body = await read_body(request, limit, timeout)
    essence, options = media_type(request)
    if not body or not essence.startswith("multipart/"):
        return None
    files = await _off_the_loop_if_large(multipart_files, options, body, max_parts)
    upload = next((upload for field, upload in files if field == "image_file"), None)
    if upload is not None:
        upload.label = "image_file"
    return upload


async def predict_uploads(request: Request, limit: int, timeout: float, max_parts: int,
                          fields: Optional[dict] = None) -> List[Upload]:
    """The images of a predict body: multipart files, base64 JSON or one raw image; ApiError otherwise.
    A JSON body's other fields (`JSON_FIELDS`) go into `fields`."""
    essence, options = media_type(request)
    body = await read_body(request, limit, timeout)
    if not body:
        raise ApiError(400, "empty_body", "The request body is empty")
    if essence == "multipart/form-data":
        uploads = [upload for _, upload in await _off_the_loop_if_large(multipart_files, options, body, max_parts)]
        if not uploads:
            raise ApiError(422, "missing_field", "The multipart body has no file field: send one or more "
                                                 "images as files (e.g. field 'file')")
    elif essence == "application/json":
        uploads = await _off_the_loop_if_large(lambda *args: json_images(*args, fields), body, max_parts)
    elif essence.startswith("image/") or essence == "application/octet-stream":
        uploads = [Upload(body, f"the request body ({len(body)} bytes)")]
    else:
        raise ApiError(415, "unsupported_media_type", "Send multipart/form-data files, application/json "
                                                      f"base64 images or one raw image. Received: {essence!r}")
    if len(uploads) > max_parts:
        raise ApiError(413, "too_many_images", f"{len(uploads)} images in one request; the limit is {max_parts}")
    return uploads


async def _off_the_loop_if_large(parse, *args):
    """`parse(*args)`, whose last two are the body and the part limit: in a thread, unless the body is so small
    that parsing it costs less than the trip to a thread (its part limit and size bound that work)."""
    body = args[-2]
    if len(body) <= INLINE_PARSE_BYTES:
        return parse(*args)
    return await asyncio.to_thread(parse, *args)


class _MultipartFiles:
    """python-multipart callbacks that collect the file parts as (field name, upload), in order.

    Every part, file or text field, counts toward `max_parts`.
    """

    def __init__(self, max_parts: int):
        self.files: List[Tuple[str, Upload]] = []
        self.max_parts, self.parts = max_parts, 0
        self._headers, self._data, self._field, self._value = {}, [], b"", b""

    def callbacks(self) -> dict:
        return {name: getattr(self, name) for name in ("on_part_begin", "on_header_field", "on_header_value",
                                                       "on_header_end", "on_part_data", "on_part_end")}

    def on_part_begin(self):
        self.parts += 1
        if self.parts > self.max_parts:
            raise ApiError(413, "too_many_images", f"More than {self.max_parts} parts (files and fields) in one "
                                                   "request")
        self._headers, self._data = {}, []

    def on_header_field(self, data, start, end):
        self._field += data[start:end]

    def on_header_value(self, data, start, end):
        self._value += data[start:end]

    def on_header_end(self):
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def on_part_data(self, data, start, end):
        self._data.append(data[start:end])

    def on_part_end(self):
        disposition = parse_options_header(self._headers.get(b"content-disposition", b""))[1]
        if b"filename" in disposition:  # files only: text fields are skipped, as Flask's request.files does
            data = b"".join(self._data)
            field = disposition.get(b"name", b"").decode("utf-8", "replace")
            self.files.append((field, Upload(data, f"upload #{len(self.files)} ({field!r}, {len(data)} bytes)")))


def multipart_files(options: dict, body: bytes, max_parts: int) -> List[Tuple[str, Upload]]:
    """The file parts of a multipart/form-data body as (field name, upload), in order."""
    boundary = options.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_multipart", "The multipart Content-Type has no boundary")
    collector = _MultipartFiles(max_parts)
    parser = python_multipart.MultipartParser(boundary, collector.callbacks())
    try:
        parser.write(body)
        parser.finalize()
    except python_multipart.exceptions.FormParserError as error:
        raise ApiError(400, "bad_multipart", f"The multipart body could not be parsed ({error})") from None
    return collector.files


def parse_json(body: bytes):
    """The JSON value of `body`; `ApiError(400)` for anything that is not JSON, deep nesting included."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as error:  # ValueError: bad syntax, bad UTF-8, huge integers
        reason = "it is nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise ApiError(400, "bad_json", f"The body is not valid JSON ({reason})") from None


JSON_FIELDS = ("charset",)  # what a JSON predict body may say besides its images


def json_images(body: bytes, max_parts: int, fields: Optional[dict] = None) -> List[Upload]:
    """`{"images": [base64, ...]}` or `{"image": base64}` (data URLs too) -> uploads; `JSON_FIELDS` into `fields`."""
    payload = parse_json(body)
    if fields is not None and isinstance(payload, dict):
        fields.update((key, payload[key]) for key in JSON_FIELDS if key in payload)
    images = payload.get("images", [payload["image"]] if "image" in payload else None) \
        if isinstance(payload, dict) else None
    if not isinstance(images, list) or not images or not all(isinstance(item, str) for item in images):
        raise ApiError(422, "missing_field", 'JSON bodies need "images": a non-empty list of base64 strings '
                                             '(or "image": one base64 string)')
    if len(images) > max_parts:
        raise ApiError(413, "too_many_images", f"{len(images)} images in one request; the limit is {max_parts}")
    uploads = []
    for index, text in enumerate(images):
        if text.startswith("data:"):  # a data URL, as a browser's FileReader makes
            text = text.partition(",")[2]
        try:
            data = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "bad_base64", f"images[{index}] is not valid base64") from None
        uploads.append(Upload(data, f"images[{index}]"))
    return uploads
