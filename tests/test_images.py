"""The one preprocessing contract: TensorFlow's path (training) and PIL's (reading, serving) agree."""

import io

import numpy as np
import pytest
from PIL import Image

from kcaptcha.data import images
from kcaptcha.data.generate import CaptchaRenderer

WIDTH, HEIGHT = 100, 60
SIZES = [(100, 60), (200, 50), (37, 90), (640, 220), (99, 61)]
MODES = ["L", "RGB", "RGBA", "LA", "P", "I;16", "1"]
FORMATS = ["PNG", "JPEG", "GIF", "BMP"]


@pytest.fixture(scope="module")
def captcha():
    return CaptchaRenderer("0123456789", 4, 4, WIDTH, HEIGHT, seed=1).render(0)[1]


def variant(image: Image.Image, size, mode: str) -> Image.Image:
    image = image.resize(size, Image.BICUBIC)
    if mode == "I;16":  # a real 16-bit grayscale image: 65535 is white
        return Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
    if mode == "P":
        return image.convert("P", palette=Image.ADAPTIVE)
    if mode in ("RGBA", "LA"):  # a transparency ramp across the width, composited on white by both paths
        pixels = np.asarray(image.convert(mode)).copy()
        pixels[..., -1] = np.linspace(0, 255, pixels.shape[1]).astype(np.uint8)[None, :]
        return Image.fromarray(pixels, mode)
    return image.convert(mode)


def encoded(image: Image.Image, image_format: str):
    buffer = io.BytesIO()
    try:
        image.save(buffer, image_format)
    except (OSError, ValueError, KeyError):
        return None  # this format cannot hold this mode
    return buffer.getvalue()


@pytest.mark.parametrize("size", SIZES)
def test_tensorflow_and_pil_paths_give_the_same_input(captcha, size):
    """Every mode and format at this size: the largest pixel difference stays small."""
    checked = 0
    for mode in MODES:
        for image_format in FORMATS:
            data = encoded(variant(captcha, size, mode), image_format)
            if data is None:
                continue
            from_tf = images.decode_image(data, HEIGHT, WIDTH).numpy()[..., 0]
            from_pil = images.to_model_input(data, WIDTH, HEIGHT)
            assert from_tf.shape == from_pil.shape == (HEIGHT, WIDTH)
            # JPEG decoders differ by a level or two; the rest agree to rounding.
            tolerance = 0.02 if image_format == "JPEG" else 0.01
            difference = np.abs(from_tf - from_pil).max()
            assert difference <= tolerance, f"{mode} {image_format} {size}: {difference:.4f}"
            checked += 1
    assert checked >= 20


def test_pil_objects_and_arrays_follow_the_same_contract(captcha):
    gray = np.asarray(captcha.convert("L"), np.float32) / 255.0
    for item in (captcha, captcha.convert("L"), np.asarray(captcha), np.asarray(captcha.convert("L")), gray,
                 gray[..., None]):
        assert np.abs(images.to_model_input(item, WIDTH, HEIGHT) - gray).max() < 0.01


def test_palette_and_one_bit_bmps_are_read_as_pictures_not_indices(captcha):
    # TensorFlow's own BMP decoder reads palette indices as gray levels and rejects 1-bit files.
    for mode in ("P", "1"):
        data = encoded(variant(captcha, (WIDTH, HEIGHT), mode), "BMP")
        expected = images.to_model_input(variant(captcha, (WIDTH, HEIGHT), mode).convert("RGB"), WIDTH, HEIGHT)
        assert np.abs(images.decode_image(data, HEIGHT, WIDTH).numpy()[..., 0] - expected).max() < 0.01


def test_transparent_pixels_are_white_on_both_paths():
    image = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    image.putpixel((3, 3), (0, 0, 0, 255))
    data = encoded(image, "PNG")
    for decoded in (images.decode_image(data, 20, 40).numpy()[..., 0], images.to_model_input(data, 40, 20)):
        assert decoded[10, 30] == pytest.approx(1.0, abs=1e-3) and decoded[3, 3] < 0.5


@pytest.mark.parametrize("payload, error, message", [
    (b"", ValueError, "empty"), (b"not an image", ValueError, "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, ValueError, "corrupt or truncated|not an image"),
])
def test_bad_bytes_are_clear_errors(payload, error, message):
    with pytest.raises(error, match=message):
        images.to_model_input(payload, WIDTH, HEIGHT)


def two_frame_gif(width=40, height=20) -> bytes:
    """A GIF whose first frame shows a dark square on the left, its second one on the right."""
    frames = [Image.new("RGB", (width, height), (250, 250, 250)) for _ in range(2)]
    frames[0].paste((20, 20, 20), (4, 4, 14, 14))
    frames[1].paste((20, 20, 20), (26, 4, 36, 14))
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def test_gif_frames_are_combined_pixel_by_pixel_as_chosen():
    data = two_frame_gif()
    left, right, background = (slice(5, 13), slice(5, 13)), (slice(5, 13), slice(27, 35)), (slice(16, 20),)

    def read(gif_frames):
        return images.to_model_input(data, 40, 20, preprocessing=images.Preprocessing(gif_frames=gif_frames))

    assert read("first")[left].max() < 0.1 and read("first")[right].min() > 0.9  # today's reading: frame 1 alone
    assert read("min")[left].max() < 0.1 and read("min")[right].max() < 0.1
    assert read("max")[left].min() > 0.9 and read("max")[right].min() > 0.9
    assert read("mean")[left] == pytest.approx(read("mean")[right]) and 0.4 < read("mean")[left].mean() < 0.6
    assert read("min")[background].min() > 0.9


def test_a_gif_of_too_many_frames_is_refused_with_its_count():
    frames = [Image.new("L", (8, 8), level) for level in range(images.MAX_FRAMES + 1)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(ValueError, match=f"has {images.MAX_FRAMES + 1} frames; --gif_frames=min combines at most"):
        images.to_model_input(buffer.getvalue(), 8, 8, preprocessing=images.Preprocessing(gif_frames="min"))


def test_a_gif_whose_frames_together_pass_pils_pixel_limit_is_refused(monkeypatch):
    frames = [Image.new("L", (8, 8), level) for level in (0, 90, 180)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    combined = images.Preprocessing(gif_frames="min")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3 * 8 * 8)  # each frame alone is far under it
    assert images.to_model_input(buffer.getvalue(), 8, 8, preprocessing=combined).shape == (8, 8)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3 * 8 * 8 - 1)
    with pytest.raises(ValueError, match="has 3 frames of 8x8: 192 pixels to combine, over PIL's limit of 191"):
        images.to_model_input(buffer.getvalue(), 8, 8, preprocessing=combined)
    assert images.to_model_input(buffer.getvalue(), 8, 8).shape == (8, 8)  # the first frame alone is read


@pytest.mark.parametrize("colour, gif_frames", [("red", "first"), ("", "min"), ("", "mean"),
                                                ("hsv:170-10,50-255,50-255+blue", "min")])
def test_training_and_reading_give_the_same_array_for_colour_and_gif_files(tmp_path, smoke_config, colour,
                                                                            gif_frames):
    """The tf.data pipeline that trains and the numpy runtime that reads, on the same files, to the bit."""
    from kcaptcha.data import pipeline
    from kcaptcha.export.saving import build_metadata

    config = smoke_config.replace(colour=colour, gif_frames=gif_frames, width=64, height=32)
    paths = []
    for style in ("colour_decoy", "gif"):
        renderer = CaptchaRenderer("0123456789", 3, 5, 90, 40, seed=5, style=style)
        for index in range(3):
            label, data = renderer.encode(index)
            paths.append(str(tmp_path / f"{label}_{style}{index}{renderer.extension}"))
            with open(paths[-1], "wb") as f:
                f.write(data)
    jpeg = tmp_path / "rgb.jpg"
    CaptchaRenderer("0123456789", 4, 4, 90, 40, seed=5, style="colour_decoy").render(9)[1].save(jpeg)
    paths.append(str(jpeg))
    trained = np.concatenate([batch.numpy() for batch in pipeline.image_dataset(paths, config, batch_size=4)])[..., 0]
    # What a loaded model applies: the choice as its metadata records it.
    recorded = images.Preprocessing.from_metadata(build_metadata(config, {}, {}))
    assert recorded == images.Preprocessing(colour, gif_frames)
    read = np.stack([images.to_model_input(path, 64, 32, preprocessing=recorded) for path in paths])
    assert np.array_equal(trained, read)
    plain = np.stack([images.to_model_input(path, 64, 32) for path in paths])
    assert not np.array_equal(plain, read)  # the choice changed what the model sees
