"""`ServiceMiddleware`: around every HTTP request, the concurrency limit, its share of the body bytes in
flight, its metrics and its one access-log line (JSON).

A request without a body counts against the concurrency limit as it arrives; one with a body only once the
body has arrived (`bodies.receive_body`), so that slow senders hold no request slot.
"""

import json
import logging
import time

from fastapi.responses import JSONResponse
from starlette.routing import Match

from kcaptcha.serve.bodies import ClientGone
from kcaptcha.serve.uploads import ApiError

access_logger = logging.getLogger("kcaptcha.access")
logger = logging.getLogger("kcaptcha.serve")
EXEMPT_PATHS = ("/healthz", "/readyz", "/metrics")  # they must answer while the service is saturated
CLIENT_GONE = 499  # the status logged for a request whose client left first (nginx's convention)
INTERNAL_ERROR = JSONResponse({"error": "internal", "detail": "An internal error occurred; it has been logged"},
                              status_code=500)


class ServiceMiddleware:
    def __init__(self, app, admission, metrics, access_log: bool = True):
        self.app, self.admission, self.metrics, self.access_log = app, admission, metrics, access_log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [CLIENT_GONE]

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._serve(scope, receive, send_and_note)
        except ClientGone as gone:
            self.metrics.disconnects.inc()
            logger.info("%s %s: the client closed the connection %s", scope["method"], scope["path"], gone)
        except Exception:  # a bug: its traceback goes to the log, never to the client
            logger.exception("%s %s failed", scope["method"], scope["path"])
            if status[0] != CLIENT_GONE:  # the answer had started: only closing the connection is left
                raise
            status[0] = 500
            await INTERNAL_ERROR(scope, receive, send)
        finally:
            self._record(scope, status[0], time.perf_counter() - started)

    async def _serve(self, scope, receive, send):
        if scope["path"] in EXEMPT_PATHS:
            return await self.app(scope, receive, send)
        allowance = self.admission.body()
        if not _has_body(scope):
            try:
                allowance.arrived()
            except ApiError as error:
                response = JSONResponse({"error": error.code, "detail": error.detail}, error.status, error.headers)
                return await response(scope, receive, send)
        scope.setdefault("state", {}).update(body_allowance=allowance, arrived=time.monotonic())
        try:
            await self.app(scope, receive, send)
        finally:
            allowance.release()

    def _record(self, scope, status: int, seconds: float) -> None:
        endpoint = _endpoint(scope)
        self.metrics.observe_request(endpoint, status, seconds)
        if self.access_log:
            client = scope.get("client")
            access_logger.info(json.dumps({
                "time": round(time.time(), 3), "client": f"{client[0]}:{client[1]}" if client else None,
                "method": scope["method"], "path": scope["path"], "query": scope.get("query_string", b"").decode(
                    "latin-1"), "status": status, "ms": round(seconds * 1000, 2),
                "model": scope.get("state", {}).get("model"), "images": scope.get("state", {}).get("images")}))


def _has_body(scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip(b"0 ")):
            return True
    return False


def _endpoint(scope) -> str:
    """The route's path template (`/v1/models/{name}/predict`), which keeps the metrics' label set small."""
    route = scope.get("route")  # set by the router
    if route is None:  # a request turned away before routing, or a path that matches no route
        route = next((r for r in scope["app"].routes if r.matches(scope)[0] is Match.FULL), None)
    return getattr(route, "path", None) or "other"
