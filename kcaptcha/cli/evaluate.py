"""bin/evaluate [--model=digits] [--errors_dir=misread/] [--output_json=report.json] labelled_dir/

Whole-image, character and per-position accuracy on a folder of labelled images (<label>_<anything>.<ext>),
the most confused character pairs, images/s and ms/image, and the list of misread images.
"""

import json

from absl import flags

from kcaptcha.cli import common

common.define_model_flags()
flags.DEFINE_string("errors_dir", None, "Copy misread images here, named <true>_as_<predicted>_<name>.")
flags.DEFINE_string("output_json", None, "Also write the full report as JSON here.")
FLAGS = flags.FLAGS


def main(argv):
    inputs = argv[1:]
    if not inputs:
        common.fail("give a folder of labelled images, e.g. bin/evaluate data/test/", code=2)
    from kcaptcha.evaluate import collect_inputs, evaluate_paths, format_report
    from kcaptcha.recognizer import load_model

    recognizer = load_model(FLAGS.model, backend=FLAGS.backend)
    report = evaluate_paths(recognizer, collect_inputs(inputs), errors_dir=FLAGS.errors_dir,
                            progress=FLAGS.progress)
    print(f"model: {recognizer.model_dir} ({recognizer.backend})")
    print(format_report(report))
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, ensure_ascii=False)


def run():
    common.run_main(main)


if __name__ == "__main__":
    run()
