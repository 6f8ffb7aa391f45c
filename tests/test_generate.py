"""bin/generate, run as a user runs it: reproducible, labelled, never overwriting."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = ["--charset=abc", "--min_length=2", "--max_length=3", "--width=64", "--height=32", "--seed=5"]


def generate(*args):
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bin", "generate"), *args],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    return result


def contents(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same 12 captchas written twice, by one worker and by two."""
    root = tmp_path_factory.mktemp("generate")
    for name, workers in (("one", 1), ("two", 2)):
        result = generate(f"--output_dir={root / name}", "--count=12", f"--data_workers={workers}", *TASK)
        assert result.returncode == 0, result.stderr
        assert "12 written, 0 already existed" in result.stdout
    return root / "one", root / "two"


def test_same_seed_gives_identical_files_whatever_the_worker_count(two_runs):
    one, two = two_runs
    assert len(contents(one)) == 12
    assert contents(one) == contents(two)


def test_labels_follow_the_charset_and_the_length_range(two_runs):
    names = sorted(os.listdir(two_runs[0]))
    labels = [name.split("_", 1)[0] for name in names]
    assert all(set(label) <= set("abc") for label in labels)
    assert {len(label) for label in labels} == {2, 3}  # both ends of the range occur
    assert all(name.endswith(f"_5-{index:06d}.png") for index, name in
               sorted((int(n.rsplit("-", 1)[1][:-4]), n) for n in names))
    with Image.open(two_runs[0] / names[0]) as image:
        assert image.size == (64, 32) and image.format == "PNG"


def test_never_overwrites_and_fills_in_what_is_missing(tmp_path, two_runs):
    folder = tmp_path / "out"
    folder.mkdir()
    original = contents(two_runs[0])
    for name, data in original.items():
        (folder / name).write_bytes(data)
    victim = sorted(original)[3]
    (folder / victim).write_bytes(b"not a captcha")
    result = generate(f"--output_dir={folder}", "--count=14", "--data_workers=1", *TASK)
    assert result.returncode == 0, result.stderr
    assert "2 written, 12 already existed" in result.stdout
    assert "images/s" in result.stdout
    after = contents(folder)
    assert after[victim] == b"not a captcha"
    assert len(after) == 14
    assert {n: d for n, d in after.items() if n != victim and n in original} == {
        n: d for n, d in original.items() if n != victim}


def test_flagfile_and_seed(tmp_path, two_runs):
    result = generate("--flagfile=experiments/smoke.flags", f"--output_dir={tmp_path / 'smoke'}", "--count=3")
    assert result.returncode == 0, result.stderr
    names = sorted(os.listdir(tmp_path / "smoke"))
    assert len(names) == 3 and all(len(n.split("_")[0]) == 2 and set(n.split("_")[0]) <= set("0123") for n in names)
    with Image.open(tmp_path / "smoke" / names[0]) as image:
        assert image.size == (48, 24)
    other = generate(f"--output_dir={tmp_path / 'seed6'}", "--count=12", "--data_workers=1", *TASK, "--seed=6")
    assert other.returncode == 0, other.stderr
    assert set(contents(tmp_path / "seed6").values()).isdisjoint(contents(two_runs[0]).values())


def test_bad_flags_are_refused_with_a_message(tmp_path):
    missing = generate("--count=3")
    assert missing.returncode != 0 and "output_dir" in missing.stderr
    bad = generate(f"--output_dir={tmp_path}", "--min_length=5", "--max_length=3")
    assert bad.returncode != 0 and "max_length must be >= min_length" in bad.stderr
    assert not os.listdir(tmp_path)


def test_varied_style_is_reproducible_and_mixes_looks():
    from kcaptcha.data.generate import CaptchaRenderer
    from kcaptcha.data.styles import find_fonts

    fonts = find_fonts("abc123")
    assert fonts and all(path.endswith(".ttf") for path in fonts)
    renderer = CaptchaRenderer("abc123", 3, 5, 120, 40, seed=9, style="varied")
    first = [renderer.render(index) for index in range(12)]
    again = [CaptchaRenderer("abc123", 3, 5, 120, 40, seed=9, style="varied").render(index) for index in range(12)]
    assert [(label, image.tobytes()) for label, image in first] == [(label, image.tobytes()) for label, image in again]
    assert all(image.size == (120, 40) and 3 <= len(label) <= 5 for label, image in first)
    backgrounds = {image.convert("RGB").getpixel((0, 0)) for _, image in first}
    assert len(backgrounds) >= 6  # colours and backgrounds vary from image to image


def test_a_nuisance_left_out_leaves_the_rest_of_the_captcha_as_drawn():
    """styles.draw(without=...) for ablations: the same random numbers are
    drawn, so only the nuisance goes."""
    import random

    from kcaptcha.data import styles

    fonts = styles.find_fonts("abc123")
    changed = []
    for seed in range(40):
        as_drawn, rng = styles.draw("ab12c", random.Random(seed), 120, 40, fonts), random.Random(seed)
        without = styles.draw("ab12c", rng, 120, 40, fonts, without=("dots",))
        after = random.Random(seed)
        styles.draw("ab12c", after, 120, 40, fonts)
        assert rng.random() == after.random()  # the same numbers drawn: later captchas stay the same
        changed.append((np.asarray(as_drawn) != np.asarray(without)).any(axis=-1).mean())
    assert max(changed) > 0 and min(changed) == 0  # without dots, a captcha that had none is the same
    plain = styles.draw("ab12c", random.Random(1), 120, 40, fonts, without=styles.NUISANCES)
    assert np.asarray(plain).std() > 10  # still a captcha: text on a background
    with pytest.raises(ValueError, match="without takes"):
        styles.draw("ab12c", random.Random(1), 120, 40, fonts, without=("smudges",))


def test_render_arrays_gives_the_renderers_gray_or_colour_captchas_in_parallel():
    from kcaptcha.data.generate import CaptchaRenderer, render_arrays

    renderer = CaptchaRenderer("abc123", 3, 5, 120, 40, seed=9, style="varied")
    gray, labels = render_arrays(renderer, 5, first=3, workers=2)
    colour, same_labels = render_arrays(renderer, 5, first=3, workers=2, colour=True)
    assert labels == same_labels == [renderer.label(i) for i in range(3, 8)]
    assert gray.shape == (5, 40, 120) and colour.shape == (5, 40, 120, 3)
    for k, index in enumerate(range(3, 8)):
        assert (gray[k] == renderer.render_gray(index)[1]).all()
        assert (colour[k] == np.asarray(renderer.render(index)[1])).all()


def test_captchas_drawn_in_memory_are_gray_as_every_model_sees_a_picture():
    """The captcha pool trains on `render_gray`; the same captcha saved to a file is read through
    `kcaptcha.data.images` (the tf.data pipeline, `Recognizer`): one grayscale rule, within uint8 rounding."""
    from kcaptcha.data import images
    from kcaptcha.data.generate import CaptchaRenderer

    renderer = CaptchaRenderer("abc123", 3, 5, 120, 40, seed=9, style="varied")
    for index in range(8):
        _, picture = renderer.render(index)
        gray = renderer.render_gray(index)[1]
        assert gray.dtype == np.uint8 and gray.shape == (40, 120)
        exact = images.to_model_input(picture, 120, 40) * 255.0
        assert np.abs(gray - exact).max() <= 0.5 + 1e-3, index


def test_varied_style_names_the_fonts_it_found(tmp_path):
    from kcaptcha.data.styles import find_fonts

    result = generate(f"--output_dir={tmp_path}", "--count=2", "--style=varied", *TASK)
    assert result.returncode == 0, result.stderr
    fonts = find_fonts("abc")
    assert f"with the {len(fonts)} fonts found on this machine" in result.stdout
    assert all(os.path.basename(font) in result.stdout for font in fonts)


def test_fonts_that_cannot_draw_the_charset_are_left_out():
    from kcaptcha.data.styles import find_fonts

    latin = set(find_fonts("abc"))
    assert latin and not find_fonts("abc\U0010fffd")  # a private-use character no font draws
    assert set(find_fonts("ab")) >= latin


def test_look_names_the_look_each_captcha_is_drawn_in(monkeypatch):
    from kcaptcha.data import generate

    renderer = generate.CaptchaRenderer("abc123", 3, 5, 120, 40, seed=9, style="varied")
    drawn_in = []
    draw, generate_image = generate.styles.draw, renderer._captcha.generate_image
    monkeypatch.setattr(generate.styles, "draw",
                        lambda *args: drawn_in.append(generate.LOOK_KCAPTCHA) or draw(*args))
    monkeypatch.setattr(renderer._captcha, "generate_image",
                        lambda *args: drawn_in.append(generate.LOOK_CAPTCHA_LIBRARY) or generate_image(*args))
    looks = [renderer.look(index) for index in range(24)]
    for index in range(24):
        renderer.render(index)
    assert drawn_in == looks
    assert set(looks) == {generate.LOOK_KCAPTCHA, generate.LOOK_CAPTCHA_LIBRARY}
    plain = generate.CaptchaRenderer("abc123", 3, 5, 120, 40, seed=9)
    assert {plain.look(index) for index in range(24)} == {generate.LOOK_CAPTCHA_LIBRARY}


def test_arithmetic_look_labels_expressions_in_a_labels_csv(tmp_path):
    """`?` is not safe in file names (Windows, glob): the files are <seed>-<index>.png and the labels in labels.csv."""
    from kcaptcha.data.folder import LabelledFolder
    from kcaptcha.data.generate import CaptchaRenderer
    from kcaptcha.reading import arithmetic

    task = ["--flagfile=experiments/arithmetic.flags", "--count=30", "--seed=4", "--data_workers=1"]
    result = generate(f"--output_dir={tmp_path / 'sums'}", *task)
    assert result.returncode == 0, result.stderr
    written = sorted(name for name in os.listdir(tmp_path / "sums") if not name.startswith("."))  # not the lock
    assert written == [f"4-{i:06d}.png" for i in range(30)] + ["labels.csv"]
    folder = LabelledFolder.open(str(tmp_path / "sums"))
    paths, labels = folder.labelled()
    renderer = CaptchaRenderer(arithmetic.CHARSET, 5, 7, 160, 60, seed=4, style="arithmetic")
    assert labels == [renderer.label(i) for i in range(30)] and len(paths) == 30
    assert {"+", "-", "×"} <= {c for label in labels for c in label}
    for label in labels:
        assert label.endswith("=?") and 5 <= len(label) <= 7
        value, reason = arithmetic.answer(label)
        assert reason is None and value == eval(label[:-2].replace("×", "*")) and value >= 0
    again = generate(f"--output_dir={tmp_path / 'sums'}", *task)  # a re-run keeps every file and row
    assert "0 written, 30 already existed" in again.stdout and LabelledFolder.open(str(tmp_path / "sums")).labels \
        == folder.labels
    os.makedirs(tmp_path / "named")
    Image.new("RGB", (160, 60)).save(tmp_path / "named" / "12ab_1.png")
    mixed = generate(f"--output_dir={tmp_path / 'named'}", *task)  # a labels.csv would unlabel 12ab_1.png
    assert mixed.returncode == 1 and "holds images labelled by their names" in mixed.stderr
    assert os.listdir(tmp_path / "named") == ["12ab_1.png"]
    wrong = generate(f"--output_dir={tmp_path / 'wrong'}", "--style=arithmetic", "--charset=0123456789")
    assert wrong.returncode == 2 and "style=arithmetic draws '0123456789+-×=?'" in wrong.stderr
