import io
import os
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kcaptcha.data import generate, images
from kcaptcha.data import pipeline as data
from kcaptcha.reading.vocab import Vocab


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
    decoded = images.decode_image(_encode(image, fmt), *expected.shape).numpy()
    assert decoded.shape == expected.shape + (1,)
    tolerance = 0.08 if fmt in ("JPEG", "GIF") or mode == "P" else 0.01
    assert np.abs(decoded[..., 0] - expected).mean() < tolerance


def test_transparency_is_composited_on_white():
    image = Image.new("RGBA", (40, 20), (0, 0, 0, 0))  # fully transparent black
    image.putpixel((3, 3), (0, 0, 0, 255))
    decoded = images.decode_image(_encode(image, "PNG"), 20, 40).numpy()[..., 0]
    assert decoded[10, 30] == pytest.approx(1.0, abs=1e-3)
    assert decoded[3, 3] < 0.5


def test_gif_first_frame_is_used():
    frames = [Image.new("L", (30, 20), value) for value in (0, 255)]
    payload = io.BytesIO()
    frames[0].save(payload, format="GIF", save_all=True, append_images=frames[1:])
    decoded = images.decode_image(payload.getvalue(), 20, 30).numpy()
    assert decoded.max() < 0.05


def test_other_sizes_are_resized(rgb_captcha):
    big = rgb_captcha.resize((rgb_captcha.width * 3, rgb_captcha.height * 2))
    decoded = images.decode_image(_encode(big, "PNG"), rgb_captcha.height, rgb_captcha.width).numpy()
    assert decoded.shape == (rgb_captcha.height, rgb_captcha.width, 1)


def test_validation_images_are_decoded_in_order(captcha_folder, smoke_config):
    paths, labels = data.labelled_files(str(captcha_folder), smoke_config)
    assert labels == [os.path.basename(p).split("_")[0] for p in paths]
    batches = list(data.image_dataset(paths, smoke_config, batch_size=5))
    assert [len(x) for x in batches] == [5, 5, 2]
    assert batches[0].shape[1:] == (smoke_config.height, smoke_config.width, 1)
    assert batches[0].dtype == tf.float32
    first = images.to_model_input(paths[0], smoke_config.width, smoke_config.height)
    assert np.abs(batches[0][0, ..., 0].numpy() - first).max() < 0.01


def test_training_pipeline_repeats_shuffles_and_augments(captcha_folder, smoke_config):
    paths, labels = data.labelled_files(str(captcha_folder), smoke_config)
    dataset = data.training_batches(smoke_config.replace(augment=1.0), files=(paths, labels))
    vocab = Vocab.from_config(smoke_config)
    seen = []
    for batch, ids in dataset.take(3):
        assert batch.shape[0] == smoke_config.batch_size
        assert ids.shape == (smoke_config.batch_size, smoke_config.max_length)
        seen += vocab.decode_many(ids.numpy())
    assert set(seen) <= set(labels) and len(seen) == 3 * smoke_config.batch_size


def test_labels_come_from_names_by_the_configured_rule(tmp_path, smoke_config):
    folder = tmp_path / "suffix"
    folder.mkdir()
    for index, label in enumerate(["01", "23", "30"]):
        Image.new("L", (48, 24), 255).save(folder / f"{index:04d}_{label}.png")
    _, labels = data.labelled_files(str(folder), smoke_config.replace(label_from="suffix"))
    assert labels == ["01", "23", "30"]
    with pytest.raises(ValueError, match=r"0000_01\.png.*length 4"):
        data.labelled_files(str(folder), smoke_config)  # by prefix, '0000' is not a 2-character label


def test_bad_training_label_names_the_file(tmp_path, smoke_config):
    folder = tmp_path / "bad"
    folder.mkdir()
    Image.new("L", (48, 24), 255).save(folder / "9z_1.png")
    with pytest.raises(ValueError, match=r"9z_1\.png.*not in the charset"):
        data.labelled_files(str(folder), smoke_config)


def test_missing_and_empty_folders_are_clear(tmp_path, smoke_config):
    with pytest.raises(FileNotFoundError, match="not found"):
        data.labelled_files(str(tmp_path / "nope"), smoke_config)
    with pytest.raises(ValueError, match="No labelled images"):
        data.labelled_files(str(tmp_path), smoke_config)


def test_the_captcha_pool_serves_batches_and_renews_itself(smoke_config):
    from kcaptcha.data.pool import CaptchaPool

    config = smoke_config.replace(augment=0.0)
    renderer = generate.CaptchaRenderer.from_config(config)
    vocab = Vocab.from_config(config)
    with CaptchaPool(config, size=32, start_index=100) as pool:
        rows = pool.variable.numpy()
        assert vocab.decode(rows[0, pool.pixels:]) == renderer.label(100)  # draws in order from start_index
        expected = images.gray_bytes(renderer.render(100)[1])  # the gray every model input goes through
        assert np.array_equal(rows[0, :pool.pixels].reshape(expected.shape), expected)
        batch, ids = next(iter(data.training_batches(config, pool=pool)))
        assert batch.shape == (config.batch_size, config.height, config.width, 1) and batch.dtype == tf.float32
        labels = {renderer.label(i) for i in range(100, 100 + 32)}
        assert set(vocab.decode_many(ids.numpy())) <= labels
        deadline = time.time() + 60
        while pool.renewed < 64 and time.time() < deadline:
            time.sleep(0.1)
        assert pool.renewed >= 64 and pool.rendered > 132
        assert not np.array_equal(pool.variable.numpy(), rows)  # older captchas were replaced
    assert pool._thread is None  # the background renewal stopped with the block


def test_a_colour_pool_holds_and_renews_rgb_captchas(smoke_config):
    from kcaptcha.data.pool import RENEW_CHUNK, CaptchaPool

    config = smoke_config.replace(augment=0.0)
    renderer = generate.CaptchaRenderer.from_config(config)

    def rgb(index):
        return np.asarray(renderer.render(index)[1].convert("RGB"))

    with CaptchaPool(config, size=32, start_index=100, colour=True) as pool:
        rows = pool.variable.numpy()
        assert np.array_equal(rows[0, :pool.pixels].reshape(config.height, config.width, 3), rgb(100))
        images, _ = next(iter(pool.dataset(8)))
        assert images.shape == (8, config.height, config.width, 3) and images.dtype == tf.uint8
        deadline = time.time() + 60
        while pool.renewed < 32 and time.time() < deadline:
            time.sleep(0.1)
        renewed = pool.variable.numpy()[0, :pool.pixels].reshape(config.height, config.width, 3)
    # The first row now holds a later captcha of the sequence, in colour too: the next one (132), or one of a
    # later chunk when renewal went on between the last look at `renewed` and the read.
    later = range(132, pool.rendered, RENEW_CHUNK)
    assert any(np.array_equal(renewed, rgb(index)) for index in later), list(later)


def test_folder_batches_mix_in_synthetic_captchas_by_the_given_fraction(tmp_path, smoke_config):
    from kcaptcha.data.pool import CaptchaPool

    config = smoke_config.replace(augment=0.0, batch_size=16, charset="01", min_length=4, max_length=4)
    folder = tmp_path / "real"
    folder.mkdir()
    for index in range(10):
        Image.new("L", (48, 24), 255).save(folder / f"0000_{index}.png")  # every real label is 0000
    paths, labels = data.labelled_files(str(folder), config)
    vocab = Vocab.from_config(config)
    with CaptchaPool(config, size=64) as pool:
        batch, ids = next(iter(data.training_batches(config, (paths, labels), pool, synthetic_fraction=0.25)))
    texts = vocab.decode_many(ids.numpy())
    assert batch.shape[0] == 16 and texts[:12] == ["0000"] * 12  # 12 real images, then 4 synthetic ones
    synthetic = batch.numpy()[12:]
    assert (synthetic < 0.9).mean() > 0.05  # drawn captchas, not the blank real images


def test_the_synthetic_share_is_the_resolved_mix(smoke_config):
    from kcaptcha.training.train import synthetic_fraction

    files = ([f"{i}.png" for i in range(180)], [])
    assert synthetic_fraction(smoke_config.replace(synthetic_mix=0.3), files) == 0.3
    assert synthetic_fraction(smoke_config.replace(synthetic_mix=0.0), files) == 0.0
    assert synthetic_fraction(smoke_config, None) == 1.0  # no folder: all synthetic
