"""Request bodies -> uploads: the byte limit while reading, multipart files, base64 JSON, raw images.

Only the event loop runs this (the JSON decoding excepted), so it splits bodies and never decodes pixels.
"""

import asyncio
import base64
import binascii
import json
from typing import List, Optional, Tuple

import python_multipart
from fastapi import Request
from python_multipart.multipart import parse_options_header

from kcaptcha.serve.uploads import MAX_IMAGES_PER_REQUEST, ApiError, Upload


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body; `ApiError(413)` as soon as it is known to pass `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"The request is {int(declared)} bytes; the limit is {limit} bytes")
    chunks, received = [], 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise ApiError(413, "too_large", f"The request is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def parent_upload(request: Request, limit: int) -> Optional[Upload]:
    """The multipart file `image_file` of a `POST /b` body, or None when there is none."""
    body = await read_body(request, limit)
    content_type = request.headers.get("content-type", "")
    files = multipart_files(content_type, body) if body and content_type.startswith("multipart/") else []
    upload = next((upload for field, upload in files if field == "image_file"), None)
    if upload is not None:
        upload.label = "image_file"
    return upload


async def predict_uploads(request: Request, limit: int) -> List[Upload]:
    """The images of a predict body: multipart files, base64 JSON or one raw image; ApiError otherwise."""
    content_type = request.headers.get("content-type", "")
    body = await read_body(request, limit)
    if not body:
        raise ApiError(400, "empty_body", "The request body is empty")
    if content_type.startswith("multipart/form-data"):
        uploads = [upload for _, upload in multipart_files(content_type, body)]
        if not uploads:
            raise ApiError(422, "missing_field", "The multipart body has no file field: send one or more "
                                                 "images as files (e.g. field 'file')")
    elif content_type.startswith("application/json"):
        uploads = await asyncio.get_running_loop().run_in_executor(None, json_images, body)
    elif content_type.startswith(("image/", "application/octet-stream")):
        uploads = [Upload(body, f"the request body ({len(body)} bytes)")]
    else:
        raise ApiError(415, "unsupported_media_type", "Send multipart/form-data files, application/json "
                                                      f"base64 images or one raw image. Received: {content_type!r}")
    if len(uploads) > MAX_IMAGES_PER_REQUEST:
        raise ApiError(413, "too_many_images", f"{len(uploads)} images in one request; the limit is "
                                               f"{MAX_IMAGES_PER_REQUEST}")
    return uploads


class _MultipartFiles:
    """python-multipart callbacks that collect the file parts as (field name, upload), in order."""

    def __init__(self):
        self.files: List[Tuple[str, Upload]] = []
        self._headers, self._data, self._field, self._value = {}, [], b"", b""

    def callbacks(self) -> dict:
        return {name: getattr(self, name) for name in ("on_part_begin", "on_header_field", "on_header_value",
                                                       "on_header_end", "on_part_data", "on_part_end")}

    def on_part_begin(self):
        if len(self.files) >= MAX_IMAGES_PER_REQUEST:
            raise ApiError(413, "too_many_images", f"More than {MAX_IMAGES_PER_REQUEST} parts in one request")
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


def multipart_files(content_type: str, body: bytes) -> List[Tuple[str, Upload]]:
    """The file parts of a multipart/form-data body as (field name, upload), in order."""
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_multipart", "The multipart Content-Type has no boundary")
    collector = _MultipartFiles()
    parser = python_multipart.MultipartParser(boundary, collector.callbacks())
    try:
        parser.write(body)
        parser.finalize()
    except python_multipart.exceptions.FormParserError as error:
        raise ApiError(400, "bad_multipart", f"The multipart body could not be parsed ({error})") from None
    return collector.files


def json_images(body: bytes) -> List[Upload]:
    """`{"images": [base64, ...]}` or `{"image": base64}` (data URLs too) -> uploads."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, "bad_json", f"The body is not valid JSON ({error})") from None
    images = payload.get("images", [payload["image"]] if "image" in payload else None) \
        if isinstance(payload, dict) else None
    if not isinstance(images, list) or not images or not all(isinstance(item, str) for item in images):
        raise ApiError(422, "missing_field", 'JSON bodies need "images": a non-empty list of base64 strings '
                                             '(or "image": one base64 string)')
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
