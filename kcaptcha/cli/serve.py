"""bin/serve --models=digits[,name=path/to/model] [--host=127.0.0.1] [--port=9999] [--save_uploads=uploads]

Serves the models over HTTP (FastAPI + uvicorn): the upload page at `/`, the parent project's `POST /b`,
`POST /v1/models/{name}/predict`, `GET /v1/models`, `GET /healthz`, and the API docs at `/docs`.
Requests that arrive together are batched into one model call per model.
"""

from absl import flags

from kcaptcha.cli import common

flags.DEFINE_list("models", ["digits"], "Models to serve: shipped names or folders, optionally renamed as "
                  "name=path. The first is the default of POST /b.")
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0 for every interface).")
flags.DEFINE_integer("port", 9999, "Port to listen on.", lower_bound=1, upper_bound=65535)
flags.DEFINE_string("save_uploads", None, "Folder to save every upload to, as "
                    "<model>/<prediction>_<timestamp>.<ext>, for relabelling and training.")
flags.DEFINE_integer("max_batch_size", 64, "Most images in one model call.", lower_bound=1)
flags.DEFINE_float("max_wait_ms", 2.0, "How long a model waits for more requests to batch with the first.",
                   lower_bound=0.0)
flags.DEFINE_bool("access_log", True, "Log every request.")
flags.DEFINE_integer("workers", 1, "Server processes, each with its own copy of the models.", lower_bound=1)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from kcaptcha.serve import run_server

    run_server(FLAGS.models, host=FLAGS.host, port=FLAGS.port, access_log=FLAGS.access_log, workers=FLAGS.workers,
               save_uploads=FLAGS.save_uploads, max_batch_size=FLAGS.max_batch_size, max_wait_ms=FLAGS.max_wait_ms)


def run():
    common.run_main(main)


if __name__ == "__main__":
    run()
