"""bin/collect --url=https://example.com/captcha --count=500 --output_dir=collected/ [--model=alnum]

Fetches captcha images from an HTTP endpoint until --output_dir holds --count of them: one request every
--interval seconds, each with a --timeout, retried with backoff; responses that are not complete images
are counted and skipped; an image already held (by content) is never saved twice; re-running continues.
With --model, each image is pre-labelled in <output_dir>/labels.csv (reading, confidence, unreviewed),
ready for review: set a row's status to accepted (or type the label and set corrected); training reads only
reviewed rows. A line on standard error every --progress_every seconds tells how it goes:

    collect: 37/60 images (+25 in 31 s, 0.81/s, about 28 s left); 40 requests, 3 failed (2 http_500,
    1 not_an_image), 1 duplicate
"""

import json

from absl import flags

from kcaptcha.cli import common

flags.DEFINE_string("url", None, "The endpoint that answers each GET with a new captcha image.")
flags.DEFINE_integer("count", 100, "How many images the output folder should hold.", lower_bound=1)
flags.DEFINE_string("output_dir", None, "Where the images (and labels.csv) go; created if missing.")
common.define_model_flag("", "A model name or folder that pre-labels each image ('' for none).")
common.define_reading_flags("For --model: ")
flags.DEFINE_float("interval", 1.0, "Seconds between requests (be polite).", lower_bound=0.0)
flags.DEFINE_float("timeout", 10.0, "Seconds before a request is given up.", lower_bound=0.1)
flags.DEFINE_integer("retries", 5, "Failed requests in a row before giving up.", lower_bound=1)
flags.DEFINE_float("progress_every", 5.0, "Seconds between two progress lines on standard error.", lower_bound=0.0)
flags.mark_flags_as_required(["url", "output_dir"])
FLAGS = flags.FLAGS


def main(argv):
    common.no_arguments(argv)
    if not FLAGS.url.startswith(("http://", "https://")):
        raise common.UsageError(f"--url must be an http:// or https:// address. Received: {FLAGS.url!r}")
    from kcaptcha.data.collect import ProgressLine, collect

    recognizer = None
    if FLAGS.model:
        from kcaptcha.reading.recognizer import load_model

        recognizer = load_model(FLAGS.model, backend=FLAGS.backend, tta=FLAGS.tta, charset=FLAGS.charset)
    summary = collect(FLAGS.url, FLAGS.count, FLAGS.output_dir, recognizer, interval=FLAGS.interval,
                      timeout=FLAGS.timeout, retries=FLAGS.retries,
                      progress=ProgressLine(FLAGS.count, every=FLAGS.progress_every))
    print(json.dumps(summary, indent=2))


def run():
    common.run_main(main)


if __name__ == "__main__":
    run()
