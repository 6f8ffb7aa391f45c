"""A whole `bin/collect` run against a local endpoint that also answers badly, and the progress it shows.

    python benchmarks/collect_run.py --count=60

Serves captchas on loopback as tests/test_collect.py does (between good images: a 404, a 500, HTML, an
empty body, one past the timeout, a truncated image, a repeat), runs `bin/collect` with its defaults
(`--interval=1`, `--progress_every=5`) and standard error to a file, as in a log, and prints the run's time,
its summary and every progress line.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("count", 60, "Images to collect.")
flags.DEFINE_string("model", "", "--model for bin/collect ('' for none).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from tests.test_collect import CaptchaServer

    server = CaptchaServer()
    server.handle_error = lambda *args: None  # the answer past the timeout finds the client gone: expected
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as folder:
        log = os.path.join(folder, "collect.log")
        started = time.perf_counter()
        with open(log, "w") as stderr:
            result = subprocess.run([sys.executable, os.path.join(REPO, "bin", "collect"), f"--url={server.url}",
                                     f"--output_dir={os.path.join(folder, 'collected')}", f"--count={FLAGS.count}",
                                     "--timeout=0.5", f"--model={FLAGS.model}"],
                                    stdout=subprocess.PIPE, stderr=stderr, text=True, check=True)
        seconds = time.perf_counter() - started
        with open(log) as f:
            lines = f.read().splitlines()
    server.shutdown()
    summary = json.loads(result.stdout)
    print(f"{summary['in_folder']} images in {seconds:.1f} s, {summary['requests']} requests, {len(lines)} lines "
          "on standard error:")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
