"""`create_app(recognizers)`: the FastAPI app: its middleware, error answers, offline docs and routes.

The API docs (`docs`) are served from local files. The event loop only receives request bodies (bounded in bytes, time and memory) and answers. Parsing runs
in a thread, decoding in the `DecodePool`, model calls in each model's `Batcher`; see `routes` for what
each request goes through.
"""

import asyncio
import contextlib
import logging
import os
from typing import Mapping, Optional

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from kcaptcha.serve import routes
from kcaptcha.serve.admission import Admission
from kcaptcha.serve.docs import add_offline_docs
from kcaptcha.serve.limits import Limits, MiB
from kcaptcha.serve.metrics import Metrics
from kcaptcha.serve.middleware import ServiceMiddleware
from kcaptcha.serve.review import ReviewQueue
from kcaptcha.serve.service import RecognitionService
from kcaptcha.serve.uploads import ApiError, UploadSaver

logger = logging.getLogger("kcaptcha.serve")
STATIC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")


def create_app(recognizers: Mapping[str, object], save_uploads: Optional[str] = None,
               save_uploads_max_mb: float = 1024.0, max_batch_size: int = 64, max_wait_ms: float = 2.0,
               access_log: bool = True, review_dir: Optional[str] = None, review_charset: Optional[str] = None,
               review_min_length: Optional[int] = None, review_max_length: Optional[int] = None,
               model_folder=None, **limits) -> FastAPI:
    """The service for `recognizers` ({name: Recognizer}; the first is the default) and the models of
    `model_folder`.

    Args:
        save_uploads: a folder; the uploads of answered requests are saved as
            `<folder>/<model>/<prediction>_<time>.<ext>` until it holds `save_uploads_max_mb` megabytes.
        max_batch_size, max_wait_ms: the most images in one model call, and how long a model's worker waits
            for more after the first arrives.
        access_log: log one JSON line per request (logger `kcaptcha.access`).
        review_dir: a folder of images to review at `/review` (see `review`); the first model reads the
            images that have no reading yet.
        review_charset, review_min_length, review_max_length: what a label accepted at `/review` may hold;
            each one not given comes from the folder's `labels.json`, else from the first model.
        model_folder: a `model_folder.ModelFolder` whose models are served too, loaded when the app starts
            and followed while it runs.
        **limits: `Limits` fields (the request, queue, connection and memory bounds).
    """
    if not recognizers and model_folder is None:
        raise ValueError("create_app needs at least one recognizer or a model folder. Received: none")
    if review_dir and not recognizers:
        raise ValueError("The review page needs a model given by name (--models) to read its images; the models "
                         "of a models folder come and go")
    from kcaptcha import __version__

    limits = Limits(**limits)
    metrics = Metrics()
    saver = UploadSaver(save_uploads, int(save_uploads_max_mb * MiB)) if save_uploads else None
    service = RecognitionService(recognizers, limits, metrics, max_batch_size, max_wait_ms, saver)
    admission = Admission(limits, metrics)
    queue = ReviewQueue(review_dir, recognizers[service.names[0]], charset=review_charset,
                        min_length=review_min_length, max_length=review_max_length) if review_dir else None

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        watching = None
        if model_folder is not None:
            await model_folder.check(service, settle=False)  # served before the first request is taken
            watching = asyncio.create_task(model_folder.watch(service))
        yield
        if watching is not None:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        service.close()

    app = FastAPI(title="kcaptcha", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Reads text CAPTCHAs. The upload page is at `/`; `POST /b` is the parent project's "
                              "API.")
    add_offline_docs(app)
    app.state.model_names, app.state.service, app.state.admission = service.names, service, admission
    app.add_middleware(ServiceMiddleware, admission=admission, metrics=metrics, access_log=access_log)
    _add_error_handlers(app)
    routes.add_info_routes(app, service, admission, metrics, _page("index.html"), model_folder)
    routes.add_parent_route(app, service)
    routes.add_predict_route(app, service)
    if queue is not None:
        routes.add_review_routes(app, queue, _page("review.html"), limits.body_timeout)
    return app


def _page(name: str) -> str:
    with open(os.path.join(STATIC, name), encoding="utf-8") as f:
        return f.read()


def _add_error_handlers(app: FastAPI) -> None:
    """Client errors and deliberate 503s; `ServiceMiddleware` answers any other exception with a generic 500."""

    @app.exception_handler(ApiError)
    async def api_error(_request, error: ApiError):
        return JSONResponse({"error": error.code, "detail": error.detail}, error.status, error.headers)
