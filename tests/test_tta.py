"""Test-time augmentation (`kcaptcha.reading.tta`, `load_model(..., tta=N)`, `--tta`): warped copies that vote."""

import os
import subprocess
import sys

import numpy as np
import pytest

from kcaptcha.data.generate import CaptchaRenderer
from kcaptcha.data.images import to_model_input
from kcaptcha.reading import tta
from kcaptcha.reading.decoding import Prediction
import kcaptcha

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def digits_batch(count=6, seed=31):
    renderer = CaptchaRenderer("0123456789", 4, 4, 100, 60, seed=seed)
    return np.stack([to_model_input(renderer.render(index)[1], 100, 60) for index in range(count)])


def test_warps_are_fixed_small_and_fill_with_white():
    assert tta.warps(5, 100, 60) == tta.warps(5, 100, 60) and len(set(tta.warps(5, 100, 60))) == 5
    batch = digits_batch(2)
    np.testing.assert_allclose(tta.warp(batch, IDENTITY), batch, atol=1e-6)
    shifted = tta.warp(batch, (1.0, 0.0, 10.0, 0.0, 1.0, 0.0))  # each output pixel from 10 columns to the right
    np.testing.assert_allclose(shifted[:, :, :80], batch[:, :, 10:90], atol=1e-6)
    assert np.all(shifted[:, :, -5:] == 1.0)  # what came from outside the image is white
    for coefficients in tta.warps(8, 100, 60):
        warped = tta.warp(batch, coefficients)
        assert warped.shape == batch.shape and 0 < np.abs(warped - batch).mean() < 0.2


def test_the_text_with_the_highest_summed_confidence_wins():
    def p(text, confidence):
        return Prediction(text, confidence, tuple([confidence] * len(text)))

    copies = [[p("ab", 0.9), p("xy", 0.5)],  # the unwarped readings first
              [p("ac", 0.6), p("xz", 0.5)],
              [p("ac", 0.6), p("xy", 0.1)],
              [p("ab", 0.2), p("xz", 0.1)]]
    first, second = tta.vote(copies)
    assert first.text == "ac" and first.confidence == pytest.approx(1.2 / 4)  # 0.6 + 0.6 beats 0.9 + 0.2
    assert first.char_confidences == pytest.approx((0.6, 0.6))
    assert second.text == "xy" and second.confidence == pytest.approx(0.6 / 4)  # a tie goes to the unwarped


def test_recognizer_votes_over_its_own_readings_of_the_warped_copies_of_every_image_with_tta_below_1():
    plain, voting = kcaptcha.load_model("digits"), kcaptcha.load_model("digits", tta=3, tta_below=1.0)
    batch = digits_batch()
    copies = [plain.predict_batch(batch)] + [plain.predict_batch(tta.warp(batch, w)) for w in tta.warps(3, 100, 60)]
    assert [r.confidence for r in copies[0]] != [r.confidence for r in copies[1]]  # the copies are read apart
    expected = tta.vote(copies)
    got = voting.predict_batch(batch)
    assert [r.text for r in got] == [r.text for r in expected]
    np.testing.assert_allclose([r.confidence for r in got], [r.confidence for r in expected], rtol=1e-4)
    assert [r.text for r in voting.predict_batch(batch[..., None])] == [r.text for r in got]  # [n, h, w, 1] too
    alone = voting.predict_batch(batch[2:3])[0]  # one image reads the same alone as in a batch
    assert alone.text == got[2].text and alone.confidence == pytest.approx(got[2].confidence, rel=1e-4)
    with pytest.raises(ValueError, match="tta must be"):
        kcaptcha.load_model("digits", tta=-1)


def test_only_the_images_read_with_a_confidence_under_tta_below_are_read_in_copies():
    batch = digits_batch(12, seed=7)
    batch[:, :, 40:60] = np.clip(batch[:, :, 40:60] + 0.5, 0.0, 1.0)  # wash a stripe out: some readings unsure
    plain = kcaptcha.load_model("digits", tta=0).predict_batch(batch)
    every = kcaptcha.load_model("digits", tta=3, tta_below=1.0).predict_batch(batch)
    confidences = sorted(r.confidence for r in plain)
    below = (confidences[5] + confidences[6]) / 2  # half the images under it
    got = kcaptcha.load_model("digits", tta=3, tta_below=below).predict_batch(batch)
    for reading, sure, voted in zip(got, plain, every):
        expected = sure if sure.confidence >= below else voted
        assert reading.text == expected.text and reading.confidence == pytest.approx(expected.confidence, rel=1e-4)
    assert any(p.confidence != e.confidence for p, e in zip(plain, every) if p.confidence < below)
    assert [r.text for r in kcaptcha.load_model("digits", tta=3, tta_below=0.0).predict_batch(batch)] == \
        [r.text for r in plain]
    with pytest.raises(ValueError, match="tta_below must be"):
        kcaptcha.load_model("digits", tta=3, tta_below=1.5)


def test_bin_evaluate_with_tta(tmp_path, repo_root):
    renderer = CaptchaRenderer("0123456789", 4, 4, 100, 60, seed=44)
    for index in range(6):
        label, image = renderer.render(index)
        image.save(tmp_path / f"{label}_{index}.png")
    result = subprocess.run([sys.executable, os.path.join(repo_root, "bin", "evaluate"), "--tta=2", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, cwd=repo_root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 warped copies voting" in result.stdout and "images: 6" in result.stdout
    wrong = subprocess.run([sys.executable, os.path.join(repo_root, "bin", "predict"), "--tta=-1", str(tmp_path)],
                           capture_output=True, text=True, timeout=300, cwd=repo_root)
    assert wrong.returncode == 2 and "tta" in wrong.stderr


def test_unsure_readings_are_read_in_copies_unless_told_not_to(repo_root):
    """The default that read best on all six real sites of docs/REAL_DATA.md: 8 copies of unsure images."""
    batch = digits_batch(12, seed=7)
    batch[:, :, 40:60] = np.clip(batch[:, :, 40:60] + 0.5, 0.0, 1.0)  # some readings unsure
    default = kcaptcha.load_model("digits").predict_batch(batch)
    eight = kcaptcha.load_model("digits", tta=8).predict_batch(batch)
    once = kcaptcha.load_model("digits", tta=0).predict_batch(batch)
    assert [(r.text, r.confidence) for r in default] == [(r.text, r.confidence) for r in eight]
    assert [(r.text, r.confidence) for r in default] != [(r.text, r.confidence) for r in once]
    for command in ("predict", "evaluate"):
        shown = subprocess.run([sys.executable, os.path.join(repo_root, "bin", command), "--helpfull"],
                               capture_output=True, text=True).stdout
        tta_help = shown[shown.index("--tta:"):].split("--", 2)[1]
        assert "(default: '8')" in tta_help, command
