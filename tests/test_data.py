import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kcaptcha import data, generate
from kcaptcha.vocab import Vocab


def _encode(image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def rgb_captcha(smoke_config):
    _, image = generate.CaptchaRenderer.from_config(smoke_config).render(0)
    return image


def test_generated_images_are_reproducible_and_labelled(smoke_config):
    renderer = generate.CaptchaRenderer.from_config(smoke_config, seed=3)
    label, image = renderer.render(5)
    again_label, again = generate.CaptchaRenderer.from_config(smoke_config, seed=3).render(5)
    assert label == again_label and image.tobytes() == again.tobytes()
    assert image.size == (smoke_config.width, smoke_config.height)
    assert not Vocab.from_config(smoke_config).check(label)
    other_label, other = generate.CaptchaRenderer.from_config(smoke_config, seed=4).render(5)
    assert image.tobytes() != other.tobytes()


@pytest.mark.parametrize("fmt, mode", [("PNG", "L"), ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"),
                                       ("JPEG", "RGB"), ("JPEG", "L"), ("BMP", "RGB"), ("GIF", "P")])
def test_every_format_and_mode_decodes_to_the_same_gray_image(rgb_captcha, fmt, mode):
    expected = np.asarray(rgb_captcha.convert("L"), np.float32) / 255.0
    image = rgb_captcha.convert(mode) if mode != "P" else rgb_captcha.convert("P", palette=Image.ADAPTIVE)
    decoded = data.decode_image(_encode(image, fmt), *expected.shape).numpy()
    assert decoded.shape == expected.shape + (1,)
    tolerance = 0.08 if fmt in ("JPEG", "GIF") or mode == "P" else 0.01
    assert np.abs(decoded[..., 0] - expected).mean() < tolerance


def test_transparency_is_composited_on_white():
    image = Image.new("RGBA", (40, 20), (0, 0, 0, 0))  # fully transparent black
    image.putpixel((3, 3), (0, 0, 0, 255))
    decoded = data.decode_image(_encode(image, "PNG"), 20, 40).numpy()[..., 0]
    assert decoded[10, 30] == pytest.approx(1.0, abs=1e-3)
    assert decoded[3, 3] < 0.5


def test_gif_first_frame_is_used():
    frames = [Image.new("L", (30, 20), value) for value in (0, 255)]
    payload = io.BytesIO()
    frames[0].save(payload, format="GIF", save_all=True, append_images=frames[1:])
    decoded = data.decode_image(payload.getvalue(), 20, 30).numpy()
    assert decoded.max() < 0.05


def test_other_sizes_are_resized(rgb_captcha):
    big = rgb_captcha.resize((rgb_captcha.width * 3, rgb_captcha.height * 2))
    decoded = data.decode_image(_encode(big, "PNG"), rgb_captcha.height, rgb_captcha.width).numpy()
    assert decoded.shape == (rgb_captcha.height, rgb_captcha.width, 1)


def test_file_pipeline_batches_labels(captcha_folder, smoke_config):
    dataset = data.folder_dataset(str(captcha_folder), smoke_config, training=False, batch_size=5)
    batches = list(dataset)
    assert [len(x) for x, _ in batches] == [5, 5, 2]
    images, ids = batches[0]
    assert images.shape[1:] == (smoke_config.height, smoke_config.width, 1)
    assert images.dtype == tf.float32 and 0.0 <= float(tf.reduce_min(images)) <= float(tf.reduce_max(images)) <= 1.0
    vocab = Vocab.from_config(smoke_config)
    names = sorted(p.name for p in captcha_folder.iterdir())
    assert vocab.decode(ids[0].numpy()) == names[0].split("_")[0]


def test_training_pipeline_repeats_and_augments(captcha_folder, smoke_config):
    dataset = data.folder_dataset(str(captcha_folder), smoke_config.replace(augment=1.0), training=True)
    for images, ids in dataset.take(3):
        assert images.shape[0] == smoke_config.batch_size
        assert ids.shape == (smoke_config.batch_size, smoke_config.max_length)


def test_bad_training_label_names_the_file(tmp_path, smoke_config):
    folder = tmp_path / "bad"
    folder.mkdir()
    Image.new("L", (48, 24), 255).save(folder / "9z_1.png")
    with pytest.raises(ValueError, match=r"9z_1\.png.*not in the charset"):
        data.folder_dataset(str(folder), smoke_config, training=True)


def test_missing_and_empty_folders_are_clear(tmp_path, smoke_config):
    with pytest.raises(FileNotFoundError, match="not found"):
        data.folder_dataset(str(tmp_path / "nope"), smoke_config, training=True)
    with pytest.raises(ValueError, match="No images"):
        data.folder_dataset(str(tmp_path), smoke_config, training=True)


def test_synthetic_dataset_is_endless_seeded_and_resumable(smoke_config):
    config = smoke_config.replace(augment=0.0)
    first = [ids.numpy() for _, ids in data.synthetic_dataset(config).take(3)]
    resumed = [ids.numpy() for _, ids in data.synthetic_dataset(config, start_batch=2).take(1)]
    assert np.array_equal(first[2], resumed[0])
    images, _ = next(iter(data.synthetic_dataset(config)))
    assert images.shape == (config.batch_size, config.height, config.width, 1)
    assert images.dtype == tf.float32


def test_label_from_filename():
    assert data.label_from_filename("/x/1234_abc_def.png") == "1234"
    assert data.label_from_filename("226md.png") == "226md"
