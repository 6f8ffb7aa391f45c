"""bin/predict [--model=digits] [--format=tsv|csv|json] [--charset=0123456789] dir/ [more dirs or files]

One line per image: path<TAB>text<TAB>confidence, and for a model of arithmetic captchas (3+8=?) the answer
(empty where the reading is no expression; --format=json says why). Folders are searched recursively. When a folder's labels.csv
or the file names carry labels the model could read (<label>_<anything>.<ext> or <label>.<ext>, see
--label_from), an accuracy summary goes to stderr at the end. Unreadable files are
reported and skipped, and the exit status is then 1.
"""

import csv
import json
import sys

from absl import flags

from kcaptcha.cli import common

common.define_model_flags()
flags.DEFINE_enum("format", "tsv", ["tsv", "csv", "json"], "Output format.")
flags.DEFINE_integer("batch_size", 256, "Images per model call.")
FLAGS = flags.FLAGS


def main(argv):
    recognizer, paths, labels = common.model_and_inputs(argv, "bin/predict samples/")
    from kcaptcha.reading.evaluate import predict_paths

    label_of = dict(zip(paths, labels))

    writer = csv.writer(sys.stdout) if FLAGS.format == "csv" else None
    if writer:
        writer.writerow(["path", "text", "confidence"] + (["answer"] if recognizer.arithmetic else []))
    failures, right, labelled = 0, 0, 0
    for path, prediction, error in predict_paths(recognizer, paths, FLAGS.batch_size, FLAGS.progress):
        if error:
            failures += 1
            print(f"error: {error}", file=sys.stderr)
            continue
        if FLAGS.format == "json":
            print(json.dumps({"path": path, **prediction.to_dict()}, ensure_ascii=False))
        else:
            row = [path, prediction.text, f"{prediction.confidence:.4f}"]
            if recognizer.arithmetic:
                row.append("" if prediction.answer is None else str(prediction.answer))
            writer.writerow(row) if writer else print("\t".join(row))
        label = label_of[path]
        if label is not None and not recognizer.vocab.check(label):  # a name like scan_01.png is no label
            labelled += 1
            right += label == prediction.text
    sys.stdout.flush()
    if labelled:
        print(f"accuracy: {right}/{labelled} = {right / labelled:.4f} on images whose names carry labels",
              file=sys.stderr)
    if failures:
        print(f"{failures} of {len(paths)} files could not be read", file=sys.stderr)
        sys.exit(1)


def run():
    common.run_main(main)


if __name__ == "__main__":
    run()
