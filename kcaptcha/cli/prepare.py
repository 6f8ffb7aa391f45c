"""bin/prepare --input_dir=raw --output_dir=data/prepared [--charset=0123456789] [--labels_csv=raw/labels.csv]

Checks every file under --input_dir (really an image, complete, labelled, label within the charset and
length limits), copies the bad ones to <output_dir>/rejected/<reason>/ and splits the good ones into
<output_dir>/{train,val,test}/ as <label>_<name>, then prints what it found. Labels come from
--labels_csv, else the folder's own labels.csv, else the file names (--label_from); the charset and the
lengths, unless given, are those the labels hold. Documents (README, *.txt, *.csv, ...) are left where they
are. Nothing is deleted or overwritten; manifest.json and report.json in --output_dir record every file.
Re-running is a no-op.
"""

from absl import flags

from kcaptcha.cli import common
from kcaptcha.flags import define_flags

define_flags(fields=("charset", "min_length", "max_length", "label_from", "seed"))
define_flags(listed=False)  # the training flags, so that a bin/train flagfile works here too
flags.DEFINE_string("input_dir", None, "Folder of labelled images (searched recursively).")
flags.DEFINE_string("output_dir", None, "Where train/, val/, test/ and rejected/ go (outside --input_dir).")
flags.DEFINE_string("split", "0.9,0.05,0.05", "train,val,test fractions, summing to 1.")
flags.DEFINE_string("labels_csv", None, "A filename,label CSV (header optional, names relative to --input_dir); "
                    "an image it does not list is unlabelled. Default: --input_dir/labels.csv if there is one, "
                    "else the label the file name carries by --label_from.")
flags.DEFINE_bool("lowercase", False, "Lower-case labels before checking them against the charset.")
flags.DEFINE_bool("move", False, "Move files instead of copying them.")
flags.mark_flags_as_required(["input_dir", "output_dir"])
FLAGS = flags.FLAGS


def main(argv):
    common.no_arguments(argv)
    config = common.config_or_exit()  # --charset=auto passes validation; prepare() then collects it
    from kcaptcha.data.inventory import format_report
    from kcaptcha.data.prepare import parse_split, prepare

    report = prepare(FLAGS.input_dir, FLAGS.output_dir, config, split=parse_split(FLAGS.split),
                     labels_csv=FLAGS.labels_csv, lowercase=FLAGS.lowercase, move=FLAGS.move,
                     given=common.given_fields())
    print(format_report(report))


def run():
    common.run_main(main)


if __name__ == "__main__":
    run()
