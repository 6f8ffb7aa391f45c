"""bin/generate --output_dir=data/digits --count=1000 [--flagfile=experiments/digits.flags]

Writes `--count` synthetic captchas of the configured charset, length and size as
`<label>_<seed>-<index>.png`. Image `index` of a seed is always the same bytes, and existing files are
never overwritten, so re-running (or raising --count) only fills in what is missing.
"""

import os
import time

from absl import flags

from kcaptcha.cli import common
from kcaptcha.flags import define_flags

# Kept free of TensorFlow: generate's worker pool starts from a forkserver that imports this module.
define_flags()
flags.DEFINE_string("output_dir", None, "Folder to write the captcha images to (created if missing).")
flags.DEFINE_integer("count", 1000, "Number of captchas to write.", lower_bound=1)
flags.mark_flag_as_required("output_dir")
FLAGS = flags.FLAGS


def main(argv):
    common.no_arguments(argv)
    config = common.config_or_exit()
    if os.path.exists(FLAGS.output_dir) and not os.path.isdir(FLAGS.output_dir):
        raise NotADirectoryError(f"--output_dir is a file, not a folder: {FLAGS.output_dir!r}")
    from kcaptcha.data.generate import CaptchaRenderer, default_workers, font_names, write_images

    start = time.perf_counter()
    renderer = CaptchaRenderer.from_config(config)
    if config.style == "varied" and not config.fonts:
        print(f"--style=varied draws with the {len(renderer.fonts)} fonts found on this machine "
              f"({', '.join(font_names(renderer.fonts))}); where other fonts are installed, the same seed "
              f"draws other captchas (give --fonts to fix the set)", flush=True)
    summary = write_images(renderer, FLAGS.output_dir, FLAGS.count, workers=config.data_workers)
    seconds = time.perf_counter() - start
    workers = default_workers(config.data_workers)
    print(f"{summary['written']} written, {summary['exists']} already existed in {FLAGS.output_dir} "
          f"({summary['written'] / max(seconds, 1e-9):.0f} images/s, {seconds:.1f} s, "
          f"{workers} worker{'' if workers == 1 else 's'})")


def run():
    common.run_main(main)


if __name__ == "__main__":
    run()
