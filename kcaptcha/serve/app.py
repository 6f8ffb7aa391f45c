"""`create_app(recognizers)`: the FastAPI app, its routes and their OpenAPI descriptions.

The event loop only reads request bodies (with a byte limit) and splits multipart forms. Each upload is
queued to its model's worker thread, which decodes it (checking the pixel count from the header before
any pixel is decoded), gathers the uploads that arrive together and reads them in one model call.
"""

import contextlib
import os
import time
from typing import Mapping, Optional

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from kcaptcha.serve.bodies import parent_upload, predict_uploads
from kcaptcha.serve.service import RecognitionService
from kcaptcha.serve.uploads import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, MAX_REQUEST_BYTES, ApiError

PAGE_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static", "index.html")

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

    service = RecognitionService(recognizers, save_uploads, max_batch_size, max_wait_ms, max_image_bytes, max_pixels)
    with open(PAGE_FILE, encoding="utf-8") as f:
        page = f.read()

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        service.close()

    app = FastAPI(title="kcaptcha", version=__version__, lifespan=lifespan,
                  description="Reads text CAPTCHAs. The upload page is at `/`; `POST /b` is the parent project's API.")
    app.state.model_names = service.names
    _add_error_handlers(app)
    _add_info_routes(app, service, page)
    _add_parent_route(app, service)
    _add_predict_route(app, service, max_request_bytes)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request, error: ApiError):
        return JSONResponse({"error": error.code, "detail": error.detail}, status_code=error.status)

    @app.exception_handler(Exception)
    async def server_error(_request, error: Exception):  # still logged with its traceback by uvicorn
        return JSONResponse({"error": "internal", "detail": f"{type(error).__name__}: {error}"}, status_code=500)


def _add_info_routes(app: FastAPI, service: RecognitionService, page: str) -> None:
    """The upload page, liveness and the list of models."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def upload_page():
        return HTMLResponse(page)

    @app.get("/healthz", summary="Liveness, and each model's batching counters")
    async def healthz():
        return {"status": "ok", "models": {name: dict(batcher.stats) for name, batcher in service.batchers.items()}}

    @app.get("/v1/models", summary="The served models and their metadata (the first is the default)")
    async def list_models():
        return {"models": [{"name": name, "default": name == service.names[0],
                            "metadata": service.recognizers[name].metadata} for name in service.names]}


def _add_parent_route(app: FastAPI, service: RecognitionService) -> None:
    """`POST /b`, answered as the parent project answers it (its error included)."""

    @app.post("/b", summary="The parent project's API: the multipart file `image_file` -> `value`",
              openapi_extra={"parameters": [_MODEL_PARAMETER], "requestBody": _PARENT_BODY})
    async def parent_predict(request: Request):
        started = time.perf_counter()
        name = service.model_name(request.query_params.get("model") or service.names[0])
        upload = await parent_upload(request, service.max_image_bytes + 64 * 1024)
        if upload is None:  # the parent's answer, status and header included
            return JSONResponse({"error_code": "1001", "error": "missing_field",
                                 "detail": "Send the image as the multipart file field 'image_file'"},
                                headers={"Access-Control-Allow-Origin": "*"})
        predictions, _, timestamp = await service.recognize(name, [upload])
        return JSONResponse({"time": timestamp, "value": predictions[0].text, "confidence": predictions[0].confidence,
                             "speed_time(ms)": int((time.perf_counter() - started) * 1000)})


def _add_predict_route(app: FastAPI, service: RecognitionService, max_request_bytes: int) -> None:
    """`POST /v1/models/{name}/predict`: one or more images, each with its confidences, and the timing."""

    @app.post("/v1/models/{name}/predict", summary="Read images: multipart files, base64 JSON or one raw image",
              openapi_extra={"requestBody": _PREDICT_BODY})
    async def predict(name: str, request: Request):
        started = time.perf_counter()
        name = service.model_name(name)
        uploads = await predict_uploads(request, max_request_bytes)
        predictions, timing, _ = await service.recognize(name, uploads)
        timing = {key: round(value, 3) for key, value in timing.items()}
        timing["total"] = round((time.perf_counter() - started) * 1000, 3)
        return JSONResponse({"model": name, "predictions": [p.to_dict() for p in predictions],
                             "batch_size": timing.pop("batch_size"), "timing_ms": timing})
