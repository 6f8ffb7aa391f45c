"""The routes and their OpenAPI descriptions: the page, health, metrics, models, `POST /b`, predict and review.

A recognition request: its body is read (bytes, time and memory bounded), parsed in a thread, and its
images are recognised under a deadline (`request_timeout`, from its arrival) while the connection is
watched: when the deadline passes or the client leaves, its remaining work is abandoned. Its uploads are
saved only after its answer has been sent.
"""

import asyncio
import time

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.background import BackgroundTask

from kcaptcha.serve.admission import BUSY_HEADERS
from kcaptcha.serve.bodies import ClientGone, parent_upload, parse_json, predict_uploads, read_body
from kcaptcha.serve.decoders import Ticket
from kcaptcha.serve.review import BadLabel, Refused
from kcaptcha.serve.uploads import ApiError

_MODEL_PARAMETER = {"name": "model", "in": "query", "required": False, "schema": {"type": "string"},
                    "description": "Which model reads the image (default: the served model whose input size "
                                   "is the image's size; of several, or of none, the first one served)."}
_CHARSET_PARAMETER = {"name": "charset", "in": "query", "required": False, "schema": {"type": "string"},
                      "description": "Read only these characters, e.g. 0123456789 (default: the service's "
                                     "--charset, else every character of the model); 422 for one the model "
                                     "cannot read."}
_PARENT_BODY = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image_file"],
    "properties": {"image_file": {"type": "string", "format": "binary"}}}}}}
_PREDICT_BODY = {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                 "description": "One or more images (any field name works)."}}}},
    "application/json": {"schema": {"type": "object", "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "byte"}, "description": "Base64 images."},
        "image": {"type": "string", "format": "byte", "description": "One base64 image (or a data URL)."},
        "charset": {"type": "string", "description": "Read only these characters (as the query's charset)."}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}, "description": "One raw image."},
}}
_DECISION_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["filename", "action"], "properties": {
        "filename": {"type": "string", "description": "The image, as /review/next named it."},
        "action": {"type": "string", "enum": ["accept", "skip", "unreadable"]},
        "label": {"type": "string", "description": "The label accepted (changed from the reading: corrected); one "
                                                   "word of the folder's charset and lengths (422 otherwise)."},
        "reviewer": {"type": "string", "description": "Who decides: each reviewer is handed different images, and "
                                                      "decides only those (409 otherwise)."},
        "override": {"type": "boolean", "description": "Decide an image handed to another reviewer, or one decided "
                                                       "already; logged."}}}}}}


def add_info_routes(app: FastAPI, service, admission, metrics, page: str, model_folder=None) -> None:
    """The upload page, liveness, readiness, metrics and the list of models (with `model_folder`'s report)."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def upload_page():
        return HTMLResponse(page)

    @app.get("/healthz", summary="Liveness: the process is up and its event loop answers")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: models loaded, workers alive, queues and request slots not full "
                                "(503 otherwise, with the reasons)")
    async def readyz():
        ready, report = service.readiness()
        if admission.in_progress >= admission.limits.max_concurrency:
            ready = False
            report["reasons"].append(f"{admission.in_progress} requests in progress, the most it takes")
            report["status"] = "not_ready"
        report.update(requests_in_progress=admission.in_progress, body_bytes_in_flight=admission.body_bytes)
        if model_folder is not None:  # a folder that fails to load is reported, and the service stays ready
            report["models_dir"] = model_folder.report()
        return JSONResponse(report, status_code=200 if ready else 503, headers=None if ready else BUSY_HEADERS)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics():
        return Response(metrics.exposition(), media_type=metrics.content_type)

    @app.get("/v1/models", summary="The served models and their metadata (the first is the default), and the "
                                   "state of each folder of --models_dir")
    async def list_models():
        names = service.names
        answer = {"models": [{"name": name, "default": name == names[0], "model_dir": service.models[name].model_dir,
                              "metadata": service.models[name].recognizer.metadata} for name in names]}
        if model_folder is not None:
            answer["models_dir"] = model_folder.report()
        return answer


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _charset(service, name: str, charset):
    """The request's charset, checked against the model (422 naming a character it cannot read), or None."""
    if charset is None:
        return None
    try:
        return service.recognizers[name].restriction(charset)[0].charset
    except ValueError as error:
        raise ApiError(422, "bad_charset", str(error)) from None


async def recognize(request: Request, service, name: str, uploads, charset=None):
    """`service.recognize` under the request's deadline, abandoned if the client leaves first; the images read
    with `charset`'s characters only, when given."""
    request.state.model, request.state.images = name, len(uploads)  # for the access log
    ticket = Ticket(_charset(service, name, charset))
    remaining = request.state.arrived + service.limits.request_timeout - time.monotonic()
    work = asyncio.ensure_future(service.recognize(name, uploads, ticket))
    gone = asyncio.ensure_future(_until_disconnected(request))
    try:
        done, _ = await asyncio.wait({work, gone}, timeout=max(remaining, 0.0),
                                     return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            return work.result()
    finally:
        gone.cancel()
        if not work.done():  # the deadline passed, the client left, or the server is stopping
            ticket.abandon()
            work.cancel()
    if gone in done:
        raise ClientGone("while its images were being read")
    service.metrics.rejected.labels("timeout").inc()
    raise ApiError(503, "timeout", f"The request was not answered within {service.limits.request_timeout:g} s "
                                   "(--request_timeout); the server is busy, retry shortly", BUSY_HEADERS)


def _saving(service, name, uploads, predictions, timestamp):
    """The task that saves a request's uploads once its answer has been sent, or None when none are saved."""
    return BackgroundTask(service.save, name, uploads, predictions, timestamp) if service.saver else None


def add_parent_route(app: FastAPI, service) -> None:
    """`POST /b`, answered as the parent project answers it (its error included)."""
    limits = service.limits

    @app.post("/b", summary="The parent project's API: the multipart file `image_file` -> `value`",
              openapi_extra={"parameters": [_MODEL_PARAMETER, _CHARSET_PARAMETER], "requestBody": _PARENT_BODY})
    async def parent_predict(request: Request):
        started = time.perf_counter()
        named = request.query_params.get("model")
        name = service.model_name(named) if named else None
        upload = await parent_upload(request, limits.max_image_bytes + 64 * 1024, limits.body_timeout,
                                     limits.max_parts)
        if upload is None:  # the parent's answer, status and header included
            return JSONResponse({"error_code": "1001", "error": "missing_field",
                                 "detail": "Send the image as the multipart file field 'image_file'"},
                                headers={"Access-Control-Allow-Origin": "*"})
        name = name or service.model_for(upload)  # none named: the model of the image's size
        predictions, _ = await recognize(request, service, name, [upload], request.query_params.get("charset"))
        timestamp = str(time.time_ns() // 1000)
        reading = predictions[0]
        answer = {key: value for key, value in reading.to_dict().items() if key.startswith("answer")}
        return JSONResponse({"time": timestamp, "value": reading.text, "confidence": reading.confidence, **answer,
                             "speed_time(ms)": int((time.perf_counter() - started) * 1000)},
                            background=_saving(service, name, [upload], predictions, timestamp))


def add_predict_route(app: FastAPI, service) -> None:
    """`POST /v1/models/{name}/predict`: one or more images, each with its confidences, and the timing."""
    limits = service.limits

    @app.post("/v1/models/{name}/predict", summary="Read images: multipart files, base64 JSON or one raw image",
              openapi_extra={"parameters": [_CHARSET_PARAMETER], "requestBody": _PREDICT_BODY})
    async def predict(name: str, request: Request):
        started = time.perf_counter()
        name = service.model_name(name)
        fields = {}
        uploads = await predict_uploads(request, limits.max_request_bytes, limits.body_timeout, limits.max_parts,
                                        fields)
        predictions, timing = await recognize(request, service, name, uploads,
                                              fields.get("charset", request.query_params.get("charset")))
        timing = {key: round(value, 3) for key, value in timing.items()}
        timing["total"] = round((time.perf_counter() - started) * 1000, 3)
        timestamp = str(time.time_ns() // 1000)
        return JSONResponse({"model": name, "predictions": [p.to_dict() for p in predictions],
                             "batch_size": timing.pop("batch_size"), "timing_ms": timing},
                            background=_saving(service, name, uploads, predictions, timestamp))


def add_review_routes(app: FastAPI, queue, page: str, body_timeout: float) -> None:
    """The review page (`/review`) and its API: the next image for a reviewer, the image, and a decision."""

    @app.get("/review", response_class=HTMLResponse, include_in_schema=False)
    async def review_page():
        return HTMLResponse(page)

    @app.get("/review/next", summary="Review: the next image for `reviewer` (least sure first), leased to them; "
                                     "the progress, and what a label may hold")
    async def review_next(reviewer: str = "anyone"):
        return await asyncio.to_thread(queue.next_item, reviewer)

    @app.get("/review/image", summary="Review: one image of the review folder, by its `name` in labels.csv")
    async def review_image(name: str):
        try:
            return FileResponse(queue.path(name), headers={"Cache-Control": "no-store"})
        except KeyError:
            raise ApiError(404, "unknown_image", f"{name!r} is not an image of the review folder") from None

    @app.post("/review/decision", summary="Review: accept (or correct) a label, skip, or mark unreadable, for an "
                                          "image handed to the reviewer (409 otherwise); the next image",
              openapi_extra={"requestBody": _DECISION_BODY})
    async def review_decision(request: Request):
        decision = parse_json(await read_body(request, 16 * 1024, body_timeout))
        if not isinstance(decision, dict) or not all(isinstance(decision.get(key, ""), str) for key in (
                "reviewer", "filename", "action", "label")) or not isinstance(decision.get("override", False), bool):
            raise ApiError(422, "bad_decision", 'A decision is {"filename", "action", "label", "reviewer"}, all '
                                                'strings, and an optional "override": true or false')
        try:
            return await asyncio.to_thread(queue.decide, decision.get("reviewer") or "anyone",
                                           decision.get("filename", ""), decision.get("action", ""),
                                           decision.get("label", ""), decision.get("override", False))
        except KeyError:
            raise ApiError(404, "unknown_image", f"{decision.get('filename')!r} is not an image of the review "
                                                 "folder") from None
        except Refused as refused:
            raise ApiError(409, refused.code, str(refused)) from None
        except BadLabel as error:
            raise ApiError(422, "bad_label", str(error)) from None
        except ValueError as error:
            raise ApiError(422, "bad_decision", str(error)) from None
