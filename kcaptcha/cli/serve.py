"""bin/serve --models=digits[,name=path/to/model] [--host=127.0.0.1] [--port=9999] [--save_uploads=uploads]
             [--review_dir=collected] [--backend=int8] [--tta=8]
bin/serve --models_dir=models/ [--poll_interval=2]

Serves the models over HTTP (FastAPI + uvicorn): the upload page at `/`, the parent project's `POST /b`,
`POST /v1/models/{name}/predict`, `GET /v1/models`, liveness at `/healthz`, readiness at `/readyz`,
Prometheus metrics at `/metrics`, the review page at `/review` (with `--review_dir`), and the API docs at `/docs` and `/redoc` (served from local files).
With --models_dir, every model folder in it is served under its folder name, and new, replaced and removed
folders are picked up while it serves (`kcaptcha.serve.model_folder`). A POST /b that names no model goes to
the model whose input size is the image's size. Requests that arrive together are batched into one model call
per model. Every request is bounded (bytes, pixels, time); past the service's capacity it is answered 503
with Retry-After. See docs/DEPLOY.md.
"""

from absl import flags

from kcaptcha.cli import common

flags.DEFINE_list("models", ["digits"], "Models to serve: shipped names or folders, optionally renamed as "
                  "name=path. The first is the default of POST /b. With --models_dir, none unless given.")
flags.DEFINE_string("models_dir", None, "A folder of model folders, each served under its folder name; a new, "
                    "replaced or removed folder is picked up while serving, without a restart.")
flags.DEFINE_float("poll_interval", 2.0, "Seconds between two looks at --models_dir; a changed folder is loaded "
                   "once it stays the same for this long.", lower_bound=0.05)
common.define_reading_flags()
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0 for every interface).")
flags.DEFINE_integer("port", 9999, "Port to listen on.", lower_bound=1, upper_bound=65535)
flags.DEFINE_string("save_uploads", None, "Folder to save the uploads of answered requests to, as "
                    "<model>/<prediction>_<timestamp>.<ext>, for relabelling and training.")
flags.DEFINE_float("save_uploads_max_mb", 1024.0, "Stop saving uploads once --save_uploads holds this many MiB.",
                   lower_bound=0.0)
flags.DEFINE_string("review_dir", None, "A folder of images to review in the browser at /review (a bin/collect or "
                    "--save_uploads folder): least sure first, each decision written to its labels.csv.")
flags.DEFINE_string("review_charset", None, "The characters a label accepted at /review may hold (default: those "
                    "of the model that read the folder, in its labels.json, else of the first model).")
flags.DEFINE_integer("review_min_length", None, "The fewest characters of a label accepted at /review (default: as "
                     "--review_charset's).", lower_bound=1)
flags.DEFINE_integer("review_max_length", None, "The most characters of a label accepted at /review (default: as "
                     "--review_charset's).", lower_bound=1)
flags.DEFINE_integer("max_batch_size", 64, "Most images in one model call.", lower_bound=1)
flags.DEFINE_float("max_wait_ms", 2.0, "How long a model waits for more requests to batch with the first.",
                   lower_bound=0.0)
flags.DEFINE_float("request_timeout", 10.0, "Seconds from a request's arrival to its answer; past them it is "
                   "answered 503 and its remaining work dropped.", lower_bound=0.001)
flags.DEFINE_float("header_timeout", 10.0, "Seconds for a request's headers to arrive before the connection is "
                   "closed.", lower_bound=0.001)
flags.DEFINE_float("body_timeout", 20.0, "Seconds for a request's body to arrive (408 past them).",
                   lower_bound=0.001)
flags.DEFINE_integer("max_request_pixels", 4096 * 4096, "Most pixels in all the images of one request together "
                     "(413 past it).", lower_bound=1)
flags.DEFINE_integer("max_queue", 512, "Most images queued per model (503 with Retry-After past it).",
                     lower_bound=1)
flags.DEFINE_integer("max_concurrency", 256, "Most requests in progress (503 with Retry-After past it).",
                     lower_bound=1)
flags.DEFINE_integer("max_bytes_in_flight_mb", 128, "Most MiB of request bodies held in memory at once (503 past "
                     "it; bodies over 1 MiB may use 7/8 of it).", lower_bound=1)
flags.DEFINE_bool("access_log", True, "Log one JSON line per request.")
flags.DEFINE_integer("workers", 1, "Server processes, each with its own copy of the models.", lower_bound=1)
FLAGS = flags.FLAGS


def main(argv):
    common.no_arguments(argv, "give models with --models or --models_dir")
    from kcaptcha.data.labels import LabelRules
    from kcaptcha.serve import run_server
    from kcaptcha.serve.limits import MiB, Limits

    limits = dict(request_timeout=FLAGS.request_timeout, header_timeout=FLAGS.header_timeout,
                  body_timeout=FLAGS.body_timeout, max_request_pixels=FLAGS.max_request_pixels,
                  max_queue=FLAGS.max_queue, max_concurrency=FLAGS.max_concurrency,
                  max_bytes_in_flight=FLAGS.max_bytes_in_flight_mb * MiB)
    try:
        Limits(**limits)
        LabelRules(FLAGS.review_charset, FLAGS.review_min_length or 1, FLAGS.review_max_length,
                   "--review_charset, --review_min_length, --review_max_length")
    except ValueError as error:  # a check across flags
        raise common.UsageError(str(error)) from None
    models = FLAGS.models if FLAGS["models"].present or not FLAGS.models_dir else []
    if FLAGS.review_dir and not models:
        raise common.UsageError("--review_dir needs a model given with --models to read its images")
    run_server(models, models_dir=FLAGS.models_dir, poll_interval=FLAGS.poll_interval,
               host=FLAGS.host, port=FLAGS.port, workers=FLAGS.workers, backend=FLAGS.backend, tta=FLAGS.tta,
               charset=FLAGS.charset,
               access_log=FLAGS.access_log,
               save_uploads=FLAGS.save_uploads, save_uploads_max_mb=FLAGS.save_uploads_max_mb,
               review_dir=FLAGS.review_dir, review_charset=FLAGS.review_charset,
               review_min_length=FLAGS.review_min_length, review_max_length=FLAGS.review_max_length,
               max_batch_size=FLAGS.max_batch_size, max_wait_ms=FLAGS.max_wait_ms, **limits)


def run():
    common.run_main(main)


if __name__ == "__main__":
    run()
