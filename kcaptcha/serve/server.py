"""Running the app: `load_recognizers(specs)`, and `run_server` with uvicorn, in one or several processes.

uvicorn closes idle keep-alive connections but has no deadline for a request's headers and no bound on the
connections it holds: `ConnectionBudgetProtocol` adds both. A connection that trickles (or never sends) its
headers is closed after `header_timeout` s; past `max_connections` open connections, a new one makes room by
closing the one whose unfinished request (or idleness) began longest ago, so idle and slow clients make way
for new ones instead of locking them out.
"""

import copy
import json
import os
import time
from typing import Dict, Optional, Sequence

from fastapi import FastAPI
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from kcaptcha.reading.tta import DEFAULT_COPIES
from kcaptcha.serve import memory
from kcaptcha.serve.app import create_app
from kcaptcha.serve.limits import Limits
from kcaptcha.serve.model_folder import ModelFolder
from kcaptcha.serve.service import check_model_name

_OPTIONS_VARIABLE = "KCAPTCHA_SERVE_OPTIONS"  # how `run_server` hands its options to worker processes


class ConnectionBudgetProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's headers and a bound on open connections.

    `header_timeout` and `max_connections` are set by `run_server` (and, in worker processes, from its options).
    """

    header_timeout = Limits.header_timeout
    max_connections = Limits.max_connections

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.waiting_since = time.monotonic()  # None while a whole request is being answered
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)
        if len(self.connections) > self.max_connections:
            self._make_room()

    def _make_room(self) -> None:
        """Closes the connection waiting longest (for its headers or body, or idle); this one if none waits."""
        waiting = [c for c in self.connections if c.waiting_since is not None and not c.transport.is_closing()]
        oldest = min(waiting, key=lambda c: c.waiting_since) if waiting else self
        oldest.transport.close()

    def on_message_begin(self) -> None:  # the first byte of the next request on a kept-alive connection
        super().on_message_begin()
        if self._header_deadline is None:
            self.waiting_since = time.monotonic()
            self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def on_headers_complete(self) -> None:
        self._cancel_header_deadline()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.waiting_since = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self.waiting_since = time.monotonic()  # idle until the next request
        super().on_response_complete()

    def connection_lost(self, exc) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)
        memory.trim_soon()  # a burst of connections leaves freed buffers behind (one trim a second at most)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def _set_connection_options(options: dict) -> None:
    ConnectionBudgetProtocol.header_timeout = options.get("header_timeout", Limits.header_timeout)
    ConnectionBudgetProtocol.max_connections = options.get("max_connections", Limits.max_connections)


def model_dirs(specs: Sequence[str]) -> Dict[str, str]:
    """`["digits", "fast=path/to/model"]` -> {name: model folder}, each folder checked; loads no model."""
    from kcaptcha.export import saving

    named = {}
    for spec in specs:
        alias, _, path = spec.partition("=") if "=" in spec else ("", "", spec)
        model_dir = saving.resolve_model_dir(path)
        name = alias or saving.read_metadata(model_dir).get("name") or os.path.basename(os.path.abspath(model_dir))
        check_model_name(name)
        if name in named:
            raise ValueError(f"Two models are named {name!r}: rename one as name=path. Received: {list(specs)}")
        named[name] = model_dir
    return named


def load_recognizers(specs: Sequence[str], backend: str = "auto", tta: int = DEFAULT_COPIES,
                     charset: Optional[str] = None) -> Dict[str, object]:
    """`["digits", "fast=path/to/model"]` -> {name: Recognizer}, named by their metadata unless `name=`;
    `backend`, `tta` and `charset` as `kcaptcha.load_model`'s."""
    named = model_dirs(specs)  # every folder checked before the slow loading starts
    return {name: served_recognizer(model_dir, backend, tta, charset) for name, model_dir in named.items()}


def served_recognizer(model_dir: str, backend: str = "auto", tta: int = DEFAULT_COPIES, charset: Optional[str] = None):
    """The `Recognizer` of a served model folder."""
    from kcaptcha.reading.recognizer import Recognizer

    # spin=False: the event loop and the decoders need the cores between model calls
    return Recognizer(model_dir, backend, spin=False, tta=tta, charset=charset)


def model_folder(models_dir, backend: str = "auto", tta: int = DEFAULT_COPIES, poll_interval: float = 2.0,
                 charset: Optional[str] = None):
    """The `ModelFolder` of `models_dir` (None for None), its models read as `load_recognizers` reads.

    Unless `backend` is "keras", a folder is served on its ONNX export only: one without (yet) is not
    loaded on Keras, which would bring TensorFlow into the server; `bin/train` saves a folder first and
    exports it after, and the folder is served once its export is written.
    """
    if models_dir is None:
        return None
    from kcaptcha.export import onnx, saving

    def load(model_dir: str):
        if backend != "keras" and onnx.onnx_files(saving.read_metadata(model_dir), backend)[0] is None:
            raise ValueError(f"{model_dir} has no ONNX export to serve (yet): it is served once bin/export writes "
                             "one (bin/train does at its end), or serve the folder with --backend=keras")
        return served_recognizer(model_dir, backend, tta, charset)

    return ModelFolder(models_dir, load, poll_interval)


def app_from_environment() -> FastAPI:
    """The app for one of several uvicorn worker processes (`run_server(workers=N)`)."""
    options = json.loads(os.environ[_OPTIONS_VARIABLE])
    _set_connection_options(options)
    memory.return_freed_memory()
    backend, tta = options.pop("backend", "auto"), options.pop("tta", DEFAULT_COPIES)
    charset = options.pop("charset", None)
    folder = model_folder(options.pop("models_dir", None), backend, tta, options.pop("poll_interval", 2.0), charset)
    return create_app(load_recognizers(options.pop("models"), backend, tta, charset), model_folder=folder,
                      **options)


def log_config() -> dict:
    """uvicorn's logging, plus the service's: one JSON line per request, and its warnings and notes."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["line"] = {"format": "%(message)s"}
    config["handlers"]["line"] = {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stdout"}
    config["loggers"]["kcaptcha.access"] = {"handlers": ["line"], "level": "INFO", "propagate": False}
    config["loggers"]["kcaptcha.serve"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def run_server(models: Sequence[str], host: str = "127.0.0.1", port: int = 9999, workers: int = 1,
               backend: str = "auto", tta: int = DEFAULT_COPIES, charset: Optional[str] = None,
               models_dir: Optional[str] = None, poll_interval: float = 2.0, **app_options) -> None:
    """Loads `models` (`backend`, `tta` and `charset` as `kcaptcha.load_model`'s) and the model folders in
    `models_dir` (looked at every `poll_interval` s for new, replaced and removed ones), and serves them with
    uvicorn until interrupted.

    With `workers` > 1, uvicorn runs that many processes, each with its own copy of the models, batching and
    metrics: on several cores, request parsing then runs in parallel too. The parent process only checks
    the model folders; it loads no model.
    """
    import uvicorn

    Limits(**{k: v for k, v in app_options.items() if k in Limits.__dataclass_fields__})  # fail before loading
    _set_connection_options(app_options)
    memory.return_freed_memory()
    server_options = dict(host=host, port=port, access_log=False, log_level="info", log_config=log_config(),
                          http=ConnectionBudgetProtocol)
    folder = model_folder(models_dir, backend, tta, poll_interval, charset)  # checks the folder; loads nothing
    in_folder = [os.path.join(folder.path, "*")] if folder else []
    if workers > 1:
        model_dirs(models)  # fail here, with a clear message, rather than in every worker
        os.environ[_OPTIONS_VARIABLE] = json.dumps({"models": list(models), "backend": backend, "tta": tta,
                                                    "charset": charset, "models_dir": models_dir,
                                                    "poll_interval": poll_interval,
                                                    **app_options})
        print(f"Serving {', '.join(list(models) + in_folder)} on http://{host}:{port}/ with {workers} worker "
              "processes", flush=True)
        uvicorn.run(f"{__name__}:{app_from_environment.__name__}", factory=True, workers=workers, **server_options)
        return
    app = create_app(load_recognizers(models, backend, tta, charset), model_folder=folder, **app_options)
    print(f"Serving {', '.join(app.state.model_names + in_folder)} on http://{host}:{port}/ (API docs at /docs)",
          flush=True)
    uvicorn.run(app, **server_options)
