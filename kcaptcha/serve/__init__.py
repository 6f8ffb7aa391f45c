"""The HTTP service: `create_app(recognizers)` is a FastAPI app that batches concurrent requests per model.

Modules, by job: `app` (the routes), `service` (the served models and saving uploads), `bodies` (request
bodies -> uploads), `uploads` (limits, decoding, saving one image), `batching` (one model call for the
uploads that arrive together), `server` (loading models, running uvicorn).
"""

from kcaptcha.serve.app import create_app
from kcaptcha.serve.server import app_from_environment, load_recognizers, run_server

__all__ = ["app_from_environment", "create_app", "load_recognizers", "run_server"]
