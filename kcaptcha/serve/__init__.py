"""The HTTP service: `create_app(recognizers)` is a FastAPI app that batches concurrent requests per model.

Modules, by job: `app` (the app: middleware, errors, offline docs), `routes` (the endpoints, the deadline and
the client watch of a request), `middleware` (the concurrency limit, metrics and access log around every
request), `admission` (requests and body bytes in flight), `limits` (every bound), `bodies` (request
bodies -> uploads), `uploads` (reading headers, decoding and saving one image), `decoders` (the decoding
threads), `batching` (one model call for the images that arrive together), `metrics` (Prometheus),
`service` (the served models and their queues), `model_folder` (serving a folder of model folders as it
changes), `review` (a folder's images handed to reviewers, least sure first), `leases` (which reviewer holds
which image), `server` (loading models, running uvicorn).
"""

from kcaptcha.serve.app import create_app
from kcaptcha.serve.server import app_from_environment, load_recognizers, run_server

__all__ = ["app_from_environment", "create_app", "load_recognizers", "run_server"]
