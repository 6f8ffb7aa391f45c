"""Page time per image on the review page, in headless Chromium, and the screenshot in docs/review.png.

    python benchmarks/review_page.py --images=50 --screenshot=docs/review.png

Writes `--images` generated captchas to a temporary folder laid out as `bin/serve --save_uploads` leaves it
(`<reading>_<time>.png`, no labels.csv), serves it with `--review_dir` and the shipped digits model, and
reviews every image by keyboard: Enter accepts the reading, and every fifth is corrected by typing. Page
time is from one Enter to the next image shown (its picture loaded), typing excluded; it is measured in
the page (`performance.now()`), so the browser's own work counts and the driver's does not.
"""

import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("images", 50, "Images to review.")
flags.DEFINE_string("screenshot", None, "Where to save a screenshot of the page (PNG), e.g. docs/review.png.")
flags.DEFINE_string("chromium", "/usr/bin/chromium", "The Chromium executable.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import numpy as np
    from playwright.sync_api import sync_playwright

    from kcaptcha.data.generate import CaptchaRenderer
    from kcaptcha.reading.recognizer import load_model
    from kcaptcha.serve import create_app
    from tests.test_serve import encoded
    from tests.test_serve_limits import running

    with tempfile.TemporaryDirectory() as folder:
        renderer = CaptchaRenderer("0123456789", 4, 4, 100, 60, seed=11)
        truth = {}
        for index in range(FLAGS.images):
            label, image = renderer.render(index)
            name = f"{label}_{1700000000000 + index}.png"
            with open(os.path.join(folder, name), "wb") as f:
                f.write(encoded(image))
            truth[name] = label
        started = time.perf_counter()
        service = create_app({"digits": load_model("digits")}, review_dir=folder, access_log=False)
        print(f"opened the review of {FLAGS.images} images (each read by the model) in "
              f"{time.perf_counter() - started:.2f} s")
        with running(service) as (_, port), sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=FLAGS.chromium, args=["--headless", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 900, "height": 620})
            started = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/review")
            page.wait_for_function("document.getElementById('image').complete && "
                                   "document.getElementById('filename')")
            print(f"page load to the first image: {1000 * (time.perf_counter() - started):.0f} ms")
            if FLAGS.screenshot:
                page.keyboard.type(page.input_value("#label")[:2])  # a correction being typed
                page.screenshot(path=FLAGS.screenshot, full_page=True)
                page.keyboard.press("Control+a")
            times, wrong = [], 0
            for index in range(FLAGS.images):
                name = page.text_content("#filename")
                if page.input_value("#label") != truth[name]:
                    wrong += 1
                if index % 5 == 0 or page.input_value("#label") != truth[name]:
                    page.keyboard.type(truth[name])
                page.evaluate("window.__t = performance.now()")
                page.keyboard.press("Enter")
                last = index == FLAGS.images - 1
                page.wait_for_function(
                    "!document.getElementById('done').hidden" if last else
                    f"document.getElementById('filename').textContent !== {name!r} && "
                    "document.getElementById('image').complete")
                times.append(page.evaluate("performance.now() - window.__t"))
            browser.close()
        times = np.array(times)
        print(f"{len(times)} images reviewed ({wrong} readings corrected, {FLAGS.images // 5} retyped): page time "
              f"per image mean {times.mean():.1f} ms, p95 {np.percentile(times, 95):.1f} ms, max {times.max():.1f} ms")


if __name__ == "__main__":
    app.run(main)
