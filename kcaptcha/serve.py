"""The HTTP service: `create_app(recognizers)` is a FastAPI app that batches concurrent requests per model.

The event loop only reads request bodies (with a byte limit) and splits multipart forms. Each upload is
queued to its model's worker thread, which decodes it (checking the pixel count from the header before
any pixel is decoded), gathers the uploads that arrive together and reads them in one model call.
"""

import asyncio
import base64
import binascii
import concurrent.futures
import json
import logging
import os
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import python_multipart
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from python_multipart.multipart import parse_options_header

from kcaptcha.batching import Batcher
from kcaptcha.uploads import (MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, MAX_IMAGES_PER_REQUEST, MAX_REQUEST_BYTES, ApiError,
                              Upload, save_upload)

PAGE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "index.html")
logger = logging.getLogger("kcaptcha.serve")


async def _read_body(request: Request, limit: int) -> bytes:
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


def _multipart_files(content_type: str, body: bytes) -> List[Tuple[str, Upload]]:
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


def _json_images(body: bytes) -> List[Upload]:
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


_MODEL_PARAMETER = {"name": "model", "in": "query", "required": False, "schema": {"type": "string"},
                    "description": "Which model reads the image (default: the first one served)."}
_PARENT_BODY = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image_file"],
    "properties": {"image_file": {"type": "string", "format": "binary"}}}}}}
_PREDICT_BODY = {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                 "description": "One or more images (any field name works)."}}}},
    "application/json": {"schema": {"type": "object", "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "byte"}, "description": "Base64 images."},
        "image": {"type": "string", "format": "byte", "description": "One base64 image (or a data URL)."}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}, "description": "One raw image."},
}}


def create_app(recognizers: Mapping[str, object], save_uploads: Optional[str] = None, max_batch_size: int = 64,
               max_wait_ms: float = 2.0, max_image_bytes: int = MAX_IMAGE_BYTES,
               max_request_bytes: int = MAX_REQUEST_BYTES, max_pixels: int = MAX_IMAGE_PIXELS) -> FastAPI:
    """The service for `recognizers` ({name: Recognizer}; the first is the default).

    Args:
        save_uploads: a folder; every upload read is saved as `<folder>/<model>/<prediction>_<time>.<ext>`.
        max_batch_size, max_wait_ms: the most uploads in one model call, and how long a worker waits for
            more after the first arrives.
        max_image_bytes, max_request_bytes, max_pixels: limits past which a request is answered 413.
    """
    if not recognizers:
        raise ValueError("create_app needs at least one recognizer. Received: none")
    from kcaptcha import __version__

    names = list(recognizers)
    batchers = {name: Batcher(r, max_batch_size, max_wait_ms, max_pixels) for name, r in recognizers.items()}
    savers = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kcaptcha-save") if save_uploads else None
    with open(PAGE_FILE, encoding="utf-8") as f:
        page = f.read()

    async def lifespan(_app):
        yield
        for batcher in batchers.values():
            batcher.close()
        if savers:
            savers.shutdown(wait=True)

    app = FastAPI(title="kcaptcha", version=__version__, lifespan=lifespan,
                  description="Reads text CAPTCHAs. The upload page is at `/`; `POST /b` is the parent project's API.")

    app.state.model_names = names

    @app.exception_handler(ApiError)
    async def api_error(_request, error: ApiError):
        return JSONResponse({"error": error.code, "detail": error.detail}, status_code=error.status)

    @app.exception_handler(Exception)
    async def server_error(_request, error: Exception):  # still logged with its traceback by uvicorn
        return JSONResponse({"error": "internal", "detail": f"{type(error).__name__}: {error}"}, status_code=500)

    def model_name(name: str) -> str:
        if name not in batchers:
            raise ApiError(404, "unknown_model", f"No model named {name!r}. Served: {', '.join(names)}")
        return name

    def save(name: str, uploads: Sequence[Upload], predictions, timestamp: str) -> None:
        folder = os.path.join(save_uploads, name)
        for upload, prediction in zip(uploads, predictions):
            try:
                save_upload(folder, prediction.text, upload, timestamp)
            except Exception:  # a full disk must not stop recognition: say so in the log
                logger.exception("Could not save an upload to %s", folder)

    async def recognize(name: str, uploads: Sequence[Upload]) -> Tuple[list, dict, str]:
        for upload in uploads:
            if len(upload.data) > max_image_bytes:
                raise ApiError(413, "too_large", f"{upload.label} is {len(upload.data)} bytes; the limit is "
                                                 f"{max_image_bytes} bytes per image")
        submit = batchers[name].submit
        if len(uploads) == 1:
            results = [await submit(uploads[0])]
        else:
            results = await asyncio.gather(*(submit(upload) for upload in uploads))
        predictions = [prediction for prediction, _ in results]
        timing = {"decode": sum(t["decode_ms"] for _, t in results), "model": max(t["model_ms"] for _, t in results),
                  "batch_size": max(t["batch_size"] for _, t in results)}
        timestamp = str(time.time_ns() // 1000)
        if savers:  # in the background: the answer does not wait for the disk
            savers.submit(save, name, uploads, predictions, timestamp)
        return predictions, timing, timestamp

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def upload_page():
        return HTMLResponse(page)

    @app.get("/healthz", summary="Liveness, and each model's batching counters")
    async def healthz():
        return {"status": "ok", "models": {name: dict(batcher.stats) for name, batcher in batchers.items()}}

    @app.get("/v1/models", summary="The served models and their metadata (the first is the default)")
    async def list_models():
        return {"models": [{"name": name, "default": name == names[0], "metadata": recognizers[name].metadata}
                           for name in names]}

    @app.post("/b", summary="The parent project's API: the multipart file `image_file` -> `value`",
              openapi_extra={"parameters": [_MODEL_PARAMETER], "requestBody": _PARENT_BODY})
    async def parent_predict(request: Request):
        started = time.perf_counter()
        name = model_name(request.query_params.get("model") or names[0])
        body = await _read_body(request, max_image_bytes + 64 * 1024)
        content_type = request.headers.get("content-type", "")
        files = _multipart_files(content_type, body) if body and content_type.startswith("multipart/") else []
        upload = next((upload for field, upload in files if field == "image_file"), None)
        if upload is None:  # the parent's answer, status and header included
            return JSONResponse({"error_code": "1001", "error": "missing_field",
                                 "detail": "Send the image as the multipart file field 'image_file'"},
                                headers={"Access-Control-Allow-Origin": "*"})
        upload.label = "image_file"
        predictions, _, timestamp = await recognize(name, [upload])
        return JSONResponse({"time": timestamp, "value": predictions[0].text, "confidence": predictions[0].confidence,
                             "speed_time(ms)": int((time.perf_counter() - started) * 1000)})

    @app.post("/v1/models/{name}/predict", summary="Read images: multipart files, base64 JSON or one raw image",
              openapi_extra={"requestBody": _PREDICT_BODY})
    async def predict(name: str, request: Request):
        started = time.perf_counter()
        name = model_name(name)
        content_type = request.headers.get("content-type", "")
        body = await _read_body(request, max_request_bytes)
        if not body:
            raise ApiError(400, "empty_body", "The request body is empty")
        if content_type.startswith("multipart/form-data"):
            uploads = [upload for _, upload in _multipart_files(content_type, body)]
            if not uploads:
                raise ApiError(422, "missing_field", "The multipart body has no file field: send one or more "
                                                     "images as files (e.g. field 'file')")
        elif content_type.startswith("application/json"):
            uploads = await asyncio.get_running_loop().run_in_executor(None, _json_images, body)
        elif content_type.startswith(("image/", "application/octet-stream")):
            uploads = [Upload(body, f"the request body ({len(body)} bytes)")]
        else:
            raise ApiError(415, "unsupported_media_type", "Send multipart/form-data files, application/json "
                                                          f"base64 images or one raw image. Received: {content_type!r}")
        if len(uploads) > MAX_IMAGES_PER_REQUEST:
            raise ApiError(413, "too_many_images", f"{len(uploads)} images in one request; the limit is "
                                                   f"{MAX_IMAGES_PER_REQUEST}")
        predictions, timing, _ = await recognize(name, uploads)
        timing = {key: round(value, 3) for key, value in timing.items()}
        timing["total"] = round((time.perf_counter() - started) * 1000, 3)
        return JSONResponse({"model": name, "predictions": [p.to_dict() for p in predictions],
                             "batch_size": timing.pop("batch_size"), "timing_ms": timing})

    return app


def load_recognizers(specs: Sequence[str]) -> Dict[str, object]:
    """`["digits", "fast=path/to/model"]` -> {name: Recognizer}, named by their metadata unless `name=`."""
    from kcaptcha import saving

    named = {}
    for spec in specs:  # check every folder before the slow loading starts
        alias, _, path = spec.partition("=") if "=" in spec else ("", "", spec)
        model_dir = saving.resolve_model_dir(path)
        name = alias or saving.read_metadata(model_dir).get("name") or os.path.basename(os.path.abspath(model_dir))
        if not name or any(c in name for c in "/?#%\\ "):
            raise ValueError(f"A model name must be non-empty and fit in a URL path. Received: {name!r}")
        if name in named:
            raise ValueError(f"Two models are named {name!r}: rename one as name=path. Received: {list(specs)}")
        named[name] = model_dir
    from kcaptcha.recognizer import Recognizer

    return {name: Recognizer(model_dir) for name, model_dir in named.items()}


def app_from_environment() -> FastAPI:
    """The app for one of several uvicorn worker processes (`run_server(workers=N)`)."""
    options = json.loads(os.environ["KCAPTCHA_SERVE_OPTIONS"])
    return create_app(load_recognizers(options.pop("models")), **options)


def run_server(models: Sequence[str], host: str = "127.0.0.1", port: int = 9999, access_log: bool = True,
               workers: int = 1, **app_options) -> None:
    """Loads `models` and serves them with uvicorn until interrupted.

    With `workers` > 1, uvicorn runs that many processes, each with its own copy of the models and its own
    batching: on several cores, request parsing then runs in parallel too.
    """
    import uvicorn

    if workers > 1:
        load_recognizers(models)  # fail here, with a clear message, rather than in every worker
        os.environ["KCAPTCHA_SERVE_OPTIONS"] = json.dumps({"models": list(models), **app_options})
        print(f"Serving {', '.join(models)} on http://{host}:{port}/ with {workers} worker processes", flush=True)
        uvicorn.run("kcaptcha.serve:app_from_environment", factory=True, host=host, port=port, workers=workers,
                    access_log=access_log, log_level="info")
        return
    app = create_app(load_recognizers(models), **app_options)
    print(f"Serving {', '.join(app.state.model_names)} on http://{host}:{port}/ (API docs at /docs)", flush=True)
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info")
