"""Request bodies -> uploads: bounded reading (bytes, time, memory), multipart parts, base64 JSON, raw images.

Multipart bodies are parsed chunk by chunk as they arrive (`multipart`), so their part, byte and pixel
budgets refuse them before the rest is read. A chunk over `INLINE_CHUNK_BYTES` is parsed in a thread, and
JSON too once it has arrived, so a body built to be slow to parse (hundreds of thousands of parts, deep
JSON) never stalls the other requests.
"""

import asyncio
import base64
import binascii
import json
import time
from typing import Callable, List, Optional, Tuple

from fastapi import Request
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect

from kcaptcha.serve.multipart import MultipartFiles
from kcaptcha.serve.uploads import ApiError, Upload


INLINE_PARSE_BYTES = 64 * 1024  # a JSON body of a captcha or a few; parsing one takes microseconds
INLINE_CHUNK_BYTES = 16 * 1024  # a multipart chunk of a captcha or a few; a millisecond at most of tiny parts


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
    """The whole request body, as `receive_body` receives it."""
    chunks = []
    await receive_body(request, limit, timeout, chunks.append, parse=False)
    return b"".join(chunks)


async def receive_body(request: Request, limit: int, timeout: float, on_chunk: Callable[[bytes], None],
                       parse: bool = True) -> int:
    """Hands each chunk of the request body to `on_chunk` as it arrives, holding the body's bytes against the
    request's share of the bytes in flight; once the body is all here, the request counts in progress
    (`Admission.enter`). Returns the body's size.

    Args:
        on_chunk: a streaming parser, which may refuse the body early (`ApiError`), or a list's `append`.
        parse: `on_chunk` parses: a chunk over `INLINE_CHUNK_BYTES` is handed to it in a thread.

    Raises:
        ApiError: 413 as soon as the body is known to pass `limit` bytes (or `on_chunk` refuses it); 408 when
            it has not arrived in `timeout` seconds, or when it was cut, slow, to make room for faster bodies;
            503 when the server holds as many body bytes as it may, or as many requests.
        ClientGone: the client closed the connection first.
    """
    allowance = request.state.body_allowance
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"The request is {int(declared)} bytes; the limit is {limit} bytes",
                       {"Connection": "close"})
    received, started = 0, time.monotonic()
    allowance.arriving()
    try:
        if declared.isdigit():
            allowance.grow(int(declared))  # all at once: a body that cannot fit is turned away before it is sent
        async with _Deadline(timeout):
            async for chunk in request.stream():
                received += len(chunk)
                allowance.received = received
                if received > limit:
                    raise ApiError(413, "too_large", f"The request is over the limit of {limit} bytes",
                                   {"Connection": "close"})
                if not declared.isdigit():
                    allowance.grow(len(chunk))
                if parse:
                    await _off_the_loop_if_large(on_chunk, chunk, inline_bytes=INLINE_CHUNK_BYTES)
                else:
                    on_chunk(chunk)
    except asyncio.TimeoutError:
        raise ApiError(408, "body_timeout", f"The request body did not arrive within {timeout:g} s "
                                            f"({received} bytes in {time.monotonic() - started:.1f} s)",
                       {"Connection": "close"}) from None
    except asyncio.CancelledError:
        if not allowance.was_cut:
            raise
        asyncio.current_task().uncancel()
        raise ApiError(408, "too_slow", f"The request body was arriving too slowly ({received} bytes in "
                                        f"{time.monotonic() - started:.1f} s) while the server needed room for "
                                        "others", {"Connection": "close"}) from None
    except ClientDisconnect:
        raise ClientGone(f"after {received} bytes of the body") from None
    except ApiError as error:
        error.headers = {**error.headers, "Connection": "close"}  # the rest of the body is not read
        raise
    allowance.arrived()
    return received


def _multipart(request: Request, limits, field: Optional[str] = None,
               prefix: str = "multipart/form-data") -> Optional[MultipartFiles]:
    """The streaming parser of a body whose media type starts with `prefix`, or None for other bodies."""
    essence, options = media_type(request)
    if not essence.startswith(prefix):
        return None
    boundary = options.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_multipart", "The multipart Content-Type has no boundary", {"Connection": "close"})
    return MultipartFiles(boundary, limits, field)


async def parent_upload(request: Request, limits) -> Optional[Upload]:
    """The multipart file `image_file` of a `POST /b` body, or None when there is none."""
    limit = limits.max_image_bytes + 64 * 1024
    parser = _multipart(request, limits, "image_file", prefix="multipart/")
    if parser is None:
        await read_body(request, limit, limits.body_timeout)  # read, so that the count in progress is right
        return None
    if not await receive_body(request, limit, limits.body_timeout, parser.feed):
        return None
    files = parser.finish()
    if not files:
        return None
    upload = files[0][1]
    upload.label = "image_file"
    return upload


async def predict_uploads(request: Request, limits, fields: Optional[dict] = None) -> List[Upload]:
    """The images of a predict body: multipart files, base64 JSON or one raw image; ApiError otherwise.
    A JSON body's other fields (`JSON_FIELDS`) go into `fields`."""
    essence, _ = media_type(request)
    parser, body = _multipart(request, limits), b""
    if parser is not None:
        size = await receive_body(request, limits.max_request_bytes, limits.body_timeout, parser.feed)
    else:
        body = await read_body(request, limits.max_request_bytes, limits.body_timeout)
        size = len(body)
    if not size:
        raise ApiError(400, "empty_body", "The request body is empty")
    if parser is not None:
        uploads = [upload for _, upload in parser.finish()]
        if not uploads:
            raise ApiError(422, "missing_field", "The multipart body has no file field: send one or more "
                                                 "images as files (e.g. field 'file')")
    elif essence == "application/json":
        uploads = await _off_the_loop_if_large(lambda *args: json_images(*args, fields), body, limits.max_parts)
    elif essence.startswith("image/") or essence == "application/octet-stream":
        uploads = [Upload(body, f"the request body ({len(body)} bytes)")]
    else:
        raise ApiError(415, "unsupported_media_type", "Send multipart/form-data files, application/json "
                                                      f"base64 images or one raw image. Received: {essence!r}")
    if len(uploads) > limits.max_parts:
        raise ApiError(413, "too_many_images", f"{len(uploads)} images in one request; the limit is "
                                               f"{limits.max_parts}")
    return uploads


async def _off_the_loop_if_large(parse, body: bytes, *args, inline_bytes: int = INLINE_PARSE_BYTES):
    """`parse(body, *args)`: in a thread, unless the body (or chunk) is so small that parsing it costs less than
    the trip to a thread (its size bounds that work)."""
    if len(body) <= inline_bytes:
        return parse(body, *args)
    return await asyncio.to_thread(parse, body, *args)


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
