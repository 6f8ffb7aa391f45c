"""bin/tune --flagfile=experiments/digits.flags --tuner=hyperband --max_trials=20 [--tune_dir=tune_runs/digits]

Sweeps the model and training settings with keras-tuner, each trial trained as `bin/train` would.
Re-running continues the search in --tune_dir (--overwrite starts over). At the end it prints and saves
(summary.csv, summary.json) a table of the trials, writes the best one as a flagfile for `bin/train`
and saves the best model. Distributed: set KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and
KERASTUNER_ORACLE_PORT (see docs/TUNING.md).
"""

import json
import os

from absl import flags

from kcaptcha.cli import common
from kcaptcha.flags import define_flags

define_flags()
flags.DEFINE_enum("tuner", "hyperband", ["hyperband", "random", "bayesian"], "The keras-tuner search algorithm.")
flags.DEFINE_integer("max_trials", 20, "Most trials (model configurations) to run.", lower_bound=1)
flags.DEFINE_string("tune_dir", None, "Search folder, resumed when re-run (default: tune_runs/<name>).")
flags.DEFINE_bool("overwrite", False, "Delete the search in --tune_dir and start over (and replace a best model "
                  "saved by another search).")
flags.DEFINE_string("best_flagfile", None,
                    "Where to write the best trial's flagfile (default: experiments/<name>.best.flags).")
flags.DEFINE_string("save_dir", None, "Where to save the best model (default: saved_models/<name>.best).")
FLAGS = flags.FLAGS


def main(argv):
    common.no_arguments(argv)
    config = common.config_or_exit()
    from kcaptcha.training import search
    from kcaptcha.training import tuning

    try:
        result = tuning.tune(
            config, FLAGS.tune_dir or os.path.join("tune_runs", config.name), tuner=FLAGS.tuner,
            max_trials=FLAGS.max_trials, overwrite=FLAGS.overwrite,
            best_flagfile=FLAGS.best_flagfile or os.path.join("experiments", f"{config.name}.best.flags"),
            save_dir=FLAGS.save_dir or os.path.join("saved_models", f"{config.name}.best"),
            given=common.given_fields())
    except RuntimeError as error:  # keras-tuner's "too many failed trials", or no trial completed
        common.fail(str(error))
    if result["role"] == "worker":
        print(f"Worker {result['tuner_id']} ran trials: {', '.join(result['trials_run']) or '(none)'}")
        return
    print(search.format_table(result["trials"]))
    print(json.dumps({k: v for k, v in result.items() if k != "trials"}, indent=2))


def run():
    common.run_main(main)


if __name__ == "__main__":
    run()
