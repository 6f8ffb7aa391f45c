"""bin/evaluate [--model=digits] [--errors_dir=misread/] [--output_json=report.json] labelled_dir/

Whole-image, character and per-position accuracy on a folder of labelled images (labels from its labels.csv,
else from file names: <label>_<anything>.<ext> or <label>.<ext> by default, see --label_from; an image whose
label the model cannot spell counts as misread), the most confused character
pairs, images/s and ms/image, and the list of misread images, the surest reading first: a misread the
model is sure of is often a wrong label.
"""

from absl import flags

from kcaptcha.cli import common

common.define_model_flags()
flags.DEFINE_string("errors_dir", None, "Copy misread images here, named <true>_as_<predicted>_<name>.")
flags.DEFINE_string("output_json", None, "Also write the full report as JSON here.")
FLAGS = flags.FLAGS


def main(argv):
    recognizer, paths, labels = common.model_and_inputs(argv, "bin/evaluate data/test/")
    from kcaptcha.reading.evaluate import evaluate_paths, format_report
    from kcaptcha.files import atomic_write_json

    report = evaluate_paths(recognizer, paths, labels, errors_dir=FLAGS.errors_dir, progress=FLAGS.progress)
    tta = (f", {recognizer.tta} warped copies voting where the confidence is under {recognizer.tta_below:g}"
           if recognizer.tta else "")
    print(f"model: {recognizer.model_dir} ({recognizer.backend}{tta})")
    print(format_report(report))
    if FLAGS.output_json:
        atomic_write_json(FLAGS.output_json, report, sort_keys=False)


def run():
    common.run_main(main)


if __name__ == "__main__":
    run()
