"""Running the app: `load_recognizers(specs)`, and `run_server` with uvicorn, in one or several processes."""

import json
import os
from typing import Dict, Sequence

from fastapi import FastAPI

from kcaptcha.serve.app import create_app

_OPTIONS_VARIABLE = "KCAPTCHA_SERVE_OPTIONS"  # how `run_server` hands its options to worker processes


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
    options = json.loads(os.environ[_OPTIONS_VARIABLE])
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
        os.environ[_OPTIONS_VARIABLE] = json.dumps({"models": list(models), **app_options})
        print(f"Serving {', '.join(models)} on http://{host}:{port}/ with {workers} worker processes", flush=True)
        uvicorn.run(f"{__name__}:{app_from_environment.__name__}", factory=True, host=host, port=port,
                    workers=workers, access_log=access_log, log_level="info")
        return
    app = create_app(load_recognizers(models), **app_options)
    print(f"Serving {', '.join(app.state.model_names)} on http://{host}:{port}/ (API docs at /docs)", flush=True)
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info")
