"""`MultipartFiles`: a multipart/form-data body parsed as it arrives, its budgets checked part by part.

Each chunk is parsed when it arrives, so a request that asks for too much is refused while its body is
still coming, before it holds a queue slot or a decoder: past `max_parts` parts (files and text fields
alike), as soon as a file passes `max_image_bytes`, and when a file's header (read as the file ends, no pixel
decoded) says that it, or the request's files together, pass the pixel budgets. Parsing stops at the first
refusal, so the work spent on one body is bounded by the budgets, however the body was built.
"""

from typing import List, Optional, Tuple

import python_multipart

from kcaptcha.serve import uploads
from kcaptcha.serve.uploads import ApiError, Upload

MAX_PART_HEADER_BYTES = 16 * 1024  # a part's headers (name, file name, type) are a few hundred bytes


class MultipartFiles:
    """python-multipart's callbacks, collecting the file parts as (field name, upload), in order, each probed.

    Args:
        boundary: the body's boundary (from its Content-Type).
        limits: the service's `Limits` (parts, bytes and pixels per image, pixels per request).
        field: collect only the files of this field (`POST /b`: `image_file`); None for every file.
    """

    def __init__(self, boundary: bytes, limits, field: Optional[str] = None):
        self.limits, self.field = limits, field
        self.files: List[Tuple[str, Upload]] = []
        self.parts, self.pixels = 0, 0
        self._headers, self._data, self._size, self._header_bytes, self._keep = {}, [], 0, 0, None
        self._name, self._value = b"", b""
        callbacks = {name: getattr(self, name) for name in ("on_part_begin", "on_header_field", "on_header_value",
                                                             "on_header_end", "on_part_data", "on_part_end")}
        self._parser = python_multipart.MultipartParser(boundary, callbacks)

    def feed(self, chunk: bytes) -> None:
        """Parses the next chunk of the body; `ApiError` as soon as the body is malformed or over a budget."""
        try:
            self._parser.write(chunk)
        except python_multipart.exceptions.FormParserError as error:
            raise ApiError(400, "bad_multipart", f"The multipart body could not be parsed ({error})") from None

    def finish(self) -> List[Tuple[str, Upload]]:
        try:
            self._parser.finalize()
        except python_multipart.exceptions.FormParserError as error:
            raise ApiError(400, "bad_multipart", f"The multipart body could not be parsed ({error})") from None
        return self.files

    def on_part_begin(self):
        self.parts += 1
        if self.parts > self.limits.max_parts:
            raise ApiError(413, "too_many_images", f"More than {self.limits.max_parts} parts (files and fields) in "
                                                   "one request")
        self._headers, self._data, self._size, self._header_bytes, self._keep = {}, [], 0, 0, None

    def on_header_field(self, data, start, end):
        self._count_header(end - start)
        self._name += data[start:end]

    def on_header_value(self, data, start, end):
        self._count_header(end - start)
        self._value += data[start:end]

    def _count_header(self, count: int) -> None:
        self._header_bytes += count
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise ApiError(400, "bad_multipart", f"Part #{self.parts} has over {MAX_PART_HEADER_BYTES} bytes of "
                                                 "headers")

    def on_header_end(self):
        self._headers[self._name.lower()] = self._value
        self._name, self._value = b"", b""

    def on_part_data(self, data, start, end):
        if not self._wanted():
            return
        self._size += end - start
        if self._size > self.limits.max_image_bytes:
            raise ApiError(413, "too_large", f"File part #{self.parts} is over the limit of "
                                             f"{self.limits.max_image_bytes} bytes per image")
        self._data.append(data[start:end])

    def on_part_end(self):
        if not self._wanted():
            return
        data, field = b"".join(self._data), self._disposition().get(b"name", b"").decode("utf-8", "replace")
        self._data = []
        upload = Upload(data, f"upload #{len(self.files)} ({field!r}, {len(data)} bytes)")
        if data:  # an empty file is answered later (400 empty_image), as an unreadable one is
            try:
                self.pixels += uploads.probe(upload, self.limits.max_image_pixels)
            except ApiError as error:
                if error.status == 413:
                    raise
                # not an image: the budgets (parts, bytes, pixels) answer first, this image's error after
            if self.pixels > self.limits.max_request_pixels:
                raise ApiError(413, "too_many_pixels", f"The request's first {len(self.files) + 1} images have "
                                                       f"{self.pixels} pixels together; the limit is "
                                                       f"{self.limits.max_request_pixels} per request")
        self.files.append((field, upload))

    def _disposition(self) -> dict:
        return python_multipart.multipart.parse_options_header(self._headers.get(b"content-disposition", b""))[1]

    def _wanted(self) -> bool:
        """A file part (text fields are skipped, as Flask's request.files does) of the field asked for."""
        if self._keep is None:
            disposition = self._disposition()
            self._keep = b"filename" in disposition and (
                self.field is None or disposition.get(b"name", b"").decode("utf-8", "replace") == self.field)
        return self._keep
