"""Coloured text and animated GIFs: bin/generate's two looks, and a model that applies its own colour selection
and frame blending, loaded and served.

The reading tests use the shipped `digits` model (trained on plain captchas) in a copy whose metadata.json
asks for the preprocessing: the split GIFs and the red-among-blue captchas read right only when the model
applies it, so a wrong answer shows.
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import kcaptcha
from kcaptcha import files
from kcaptcha.config import Config
from kcaptcha.data import colours, images
from kcaptcha.data.generate import CaptchaRenderer, render_arrays
from kcaptcha.export import saving

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = ["--charset=0123456789", "--min_length=4", "--max_length=4", "--width=100", "--height=60", "--seed=5"]


def generate(*args):
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bin", "generate"), *TASK, *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def digits_copy(folder, **preprocessing) -> str:
    """The shipped digits model, copied to `folder`, its metadata asking for `preprocessing`."""
    shutil.copytree(saving.resolve_model_dir("digits"), folder)
    metadata = files.read_json(os.path.join(folder, saving.METADATA_FILE))
    files.atomic_write_json(os.path.join(folder, saving.METADATA_FILE), {**metadata, **preprocessing})
    return str(folder)


def plain_captchas(count=8, first=0):
    """Captchas the shipped digits model reads: (label, RGB array)."""
    renderer = CaptchaRenderer("0123456789", 4, 4, 100, 60, seed=3)
    return [(label, np.asarray(image.convert("RGB"))) for label, image in map(renderer.render, range(first, first + count))]


def split_gifs():
    """(label, GIF bytes): the left half of each captcha in the first frame, the right half in the second."""
    found = []
    for label, pixels in plain_captchas():
        left, right = pixels.copy(), pixels.copy()
        left[:, 50:], right[:, :50] = 255, 255
        buffer = io.BytesIO()
        Image.fromarray(left).save(buffer, "GIF", save_all=True, append_images=[Image.fromarray(right)],
                                   duration=200, loop=0)
        found.append((label, buffer.getvalue()))
    return found


def red_among_blue():
    """(label, PNG bytes): each captcha's text in red over another captcha's text in blue, on white."""
    found = []
    for (label, pixels), (_, decoy) in zip(plain_captchas(), plain_captchas(first=100)):
        canvas = np.full(pixels.shape, 255, np.uint8)
        canvas[decoy.mean(axis=-1) < 200] = (40, 60, 200)
        canvas[pixels.mean(axis=-1) < 200] = (210, 30, 30)
        buffer = io.BytesIO()
        Image.fromarray(canvas).save(buffer, "PNG")
        found.append((label, buffer.getvalue()))
    return found


def test_generate_writes_gifs_whose_first_frame_lacks_characters(tmp_path):
    result = generate(f"--output_dir={tmp_path}", "--count=6", "--style=gif", "--data_workers=1")
    assert result.returncode == 0, result.stderr
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 6 and all(name.endswith(".gif") for name in names)
    for name in names:
        with Image.open(tmp_path / name) as image:
            assert image.format == "GIF" and 2 <= image.n_frames <= 3
        first, blended = (images.to_model_input(str(tmp_path / name), 100, 60,
                                                preprocessing=images.Preprocessing(gif_frames=how))
                          for how in ("first", "min"))
        assert (blended < 0.5).sum() > (first < 0.5).sum() * 1.2, name  # more text in every frame than in the first


def test_generate_draws_the_label_in_the_chosen_colour_among_decoys(tmp_path):
    result = generate(f"--output_dir={tmp_path}", "--count=6", "--style=colour_decoy", "--colour=blue",
                      "--data_workers=1")
    assert result.returncode == 0, result.stderr
    decoy_pixels = 0
    for name in sorted(os.listdir(tmp_path)):
        pixels = np.asarray(Image.open(tmp_path / name).convert("RGB"), np.float32)
        ink = np.abs(pixels - np.median(pixels, axis=(0, 1))).max(axis=-1) > 60  # not the background
        chosen = colours.mask(pixels, "blue")
        assert chosen.sum() > 100, name  # the label's 4 characters are blue ...
        decoy_pixels += (ink & ~chosen).sum()
    assert decoy_pixels > 6 * 50  # ... and the decoys are not
    refused = generate(f"--output_dir={tmp_path / 'x'}", "--colour=mauve")
    assert refused.returncode == 2 and "'mauve' is neither a colour name" in refused.stderr


@pytest.mark.parametrize("style, preprocessing", [("colour_decoy", images.Preprocessing("red")),
                                                  ("gif", images.Preprocessing(gif_frames="min"))])
def test_captchas_drawn_for_training_are_what_their_files_read_as(style, preprocessing):
    """The pool and the synthetic validation set hold `render_arrays`' captchas; a file of the same captcha is
    read by `kcaptcha.data.images` with the model's preprocessing: the same pixels, within uint8 rounding."""
    renderer = CaptchaRenderer("0123456789", 4, 4, 100, 60, seed=11, style=style, preprocessing=preprocessing)
    drawn, labels = render_arrays(renderer, 6, workers=1)
    for index in range(6):
        label, data = renderer.encode(index)
        assert label == labels[index]
        read = images.to_model_input(data, 100, 60, preprocessing=preprocessing) * 255.0
        assert np.abs(drawn[index] - read).max() <= 0.5 + 1e-3
        plain = images.to_model_input(data, 100, 60) * 255.0
        assert np.abs(drawn[index] - plain).max() > 50  # drawn with the preprocessing, not without


def test_a_loaded_model_combines_gif_frames_as_its_metadata_says(tmp_path):
    gifs = split_gifs()
    blending = kcaptcha.load_model(digits_copy(tmp_path / "min", gif_frames="min"))
    first_frame = kcaptcha.load_model(digits_copy(tmp_path / "first", gif_frames="first"))
    assert [r.text for r in blending.predict([data for _, data in gifs])] == [label for label, _ in gifs]
    assert sum(r.text == label for r, (label, _) in zip(first_frame.predict([d for _, d in gifs]), gifs)) <= 1


def test_a_loaded_model_selects_the_colour_its_metadata_names(tmp_path):
    captchas = red_among_blue()
    red = kcaptcha.load_model(digits_copy(tmp_path / "red", colour="red"))
    plain = kcaptcha.load_model("digits")
    assert [r.text for r in red.predict([data for _, data in captchas])] == [label for label, _ in captchas]
    assert sum(r.text == label for r, (label, _) in zip(plain.predict([d for _, d in captchas]), captchas)) <= 2


@contextlib.contextmanager
def _stopped_on_failure(process):
    """`serving` stops the server when its block ends well; a failed assertion would leave it running."""
    try:
        yield
    except BaseException:
        process.kill()
        process.wait(30)
        raise


def test_a_served_model_applies_its_own_colour_selection_and_frame_blending(tmp_path):
    from tests.test_serve import serving

    gifs, captchas = split_gifs(), red_among_blue()
    models = (f"--models=gif={digits_copy(tmp_path / 'gif', gif_frames='min')},"
              f"red={digits_copy(tmp_path / 'red', colour='red')}")
    with serving(tmp_path, models) as running, _stopped_on_failure(running["process"]):
        client = running["client"]
        listed = {model["name"]: model for model in client.get("/v1/models").json()["models"]}
        assert listed["gif"]["metadata"]["gif_frames"] == "min" and listed["red"]["metadata"]["colour"] == "red"
        for name, samples in (("gif", gifs), ("red", captchas)):
            answer = client.post(f"/v1/models/{name}/predict",
                                 files=[("file", (f"{i}.img", data, "application/octet-stream"))
                                        for i, (_, data) in enumerate(samples)])
            assert answer.status_code == 200, answer.text
            assert [p["text"] for p in answer.json()["predictions"]] == [label for label, _ in samples]
        frames = [Image.new("L", (100, 60), level) for level in range(images.MAX_FRAMES + 1)]
        buffer = io.BytesIO()
        frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
        refused = client.post("/v1/models/gif/predict", files={"file": ("many.gif", buffer.getvalue(), "image/gif")})
        assert refused.status_code == 400 and f"has {images.MAX_FRAMES + 1} frames" in json.dumps(refused.json())


def test_a_folder_trained_with_a_colour_mixes_in_synthetic_captchas_that_survive_it(tmp_path, smoke_config):
    from kcaptcha.training import resolve
    from tests.conftest import write_captchas

    write_captchas(str(tmp_path / "raw"), smoke_config, 12)
    config, _ = resolve.resolve(Config(train_dir=str(tmp_path / "raw"), init_from="none", colour="red"),
                                given={"train_dir", "init_from", "colour"})
    assert config.style == "colour_decoy" and config.colour == "red"


def test_exports_that_decode_with_tensorflow_refuse_a_model_that_selects_a_colour(tmp_path):
    from kcaptcha.export import serving as exports

    model_dir = digits_copy(tmp_path / "red", colour="red")
    for export in (exports.export_savedmodel, exports.export_tflite):
        with pytest.raises(ValueError, match="selects a colour or combines GIF frames"):
            export(model_dir, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


def test_fine_tuning_keeps_the_base_models_colour_selection_unless_given(tmp_path):
    from kcaptcha.training import resolve

    base = digits_copy(tmp_path / "red", colour="red", gif_frames="min")
    config, notes = resolve.resolve(Config(init_from=base, style="colour_decoy"), given={"init_from", "style"})
    assert (config.colour, config.gif_frames) == ("red", "min") and "colour=red" in notes[0]
    config, _ = resolve.resolve(Config(init_from=base, style="colour_decoy", colour="blue"),
                                given={"init_from", "style", "colour"})
    assert (config.colour, config.gif_frames) == ("blue", "min")
