"""The architectures in the registry, CTC decoding, and per-image augmentation."""

import numpy as np
import pytest
import tensorflow as tf

from kcaptcha import models
from kcaptcha.data.augment import Augmenter
from kcaptcha.reading import decoding
from kcaptcha.reading.vocab import Vocab


def frame_logits(charset: str, path: str) -> np.ndarray:
    """Logits whose best class per frame spells `path` ('-' is the blank): 0.9 probability each."""
    classes = len(charset) + 1
    logits = np.full((len(path), classes), np.log(0.1 / (classes - 1)), np.float32)
    for frame, char in enumerate(path):
        logits[frame, classes - 1 if char == "-" else charset.index(char)] = np.log(0.9)
    return logits


def test_ctc_decoding_collapses_repeats_and_drops_blanks():
    vocab = Vocab("abc", 2, 4)
    logits = np.stack([frame_logits("abc", "aa-a-bb--c"), frame_logits("abc", "a---------"),
                       frame_logits("abc", "ab-c-a-b-c")])
    first, too_short, too_long = decoding.decode(logits, "ctc", vocab)
    assert first.text == "aabc" and len(first.char_confidences) == 4
    assert first.confidence == pytest.approx(0.9 ** 4, rel=1e-3)  # its 4 characters', not its 10 frames'
    assert all(c == pytest.approx(0.9, rel=1e-3) for c in first.char_confidences)
    # Greedy reads "a" and "abcabc", outside min_length..max_length: each is read again as the best path of
    # an allowed length, its confidence scaled by that path's probability against the greedy one's.
    assert too_short.text.startswith("a") and len(too_short.text) == 2 and too_short.confidence < 0.05
    assert len(too_long.text) == 4 and too_long.confidence < 0.05


def test_a_reading_of_impossible_length_is_replaced_by_the_best_one_of_an_allowed_length():
    """A letter lost in a run ("ann" greedily read "an") comes back; a reading already in range is untouched."""
    probabilities = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.5, 0.4], [0.1, 0.8, 0.1]], np.float32)
    logits = np.log(probabilities)[None]  # classes: a, n, blank; greedy path "a n n n" reads "an"
    lost, = decoding.decode(logits, "ctc", Vocab("an", 3, 3))
    assert lost.text == "ann"  # frame 2 read as the blank (0.4) instead of "n" (0.5) splits the run
    assert lost.char_confidences == pytest.approx((0.8, 0.8, 0.8))
    assert lost.confidence == pytest.approx(0.8 ** 3 * 0.4 / 0.5, rel=1e-4)
    in_range, = decoding.decode(logits, "ctc", Vocab("an", 2, 3))
    assert in_range.text == "an" and in_range.confidence == pytest.approx(0.8 * 0.8, rel=1e-4)
    no_room, = decoding.decode(logits, "ctc", Vocab("an", 5, 5))  # 4 frames cannot spell 5 characters
    assert no_room.text == "an" and no_room.confidence == 0.0


def collapse(path, blank):
    text, previous = [], blank
    for symbol in path:
        if symbol != blank and symbol != previous:
            text.append(symbol)
        previous = symbol
    return text


def test_best_paths_of_length_match_brute_force_over_every_path():
    import itertools

    rng = np.random.default_rng(7)
    for case in range(60):
        frames, classes = rng.integers(1, 6), rng.integers(2, 5)
        min_length = int(rng.integers(0, 3))
        max_length = min_length + int(rng.integers(0, 3))
        log_probs = decoding.log_softmax(rng.normal(0, 2, (3, frames, classes)))
        paths, scores = decoding.best_paths_of_length(log_probs, min_length, max_length)
        for row in range(3):
            allowed = [sum(log_probs[row, t, s] for t, s in enumerate(path))
                       for path in itertools.product(range(classes), repeat=int(frames))
                       if min_length <= len(collapse(path, classes - 1)) <= max_length]
            if not allowed:
                assert scores[row] < decoding.IMPOSSIBLE / 2
                continue
            assert scores[row] == pytest.approx(max(allowed), abs=1e-4), case
            path = paths[row].tolist()
            assert min_length <= len(collapse(path, classes - 1)) <= max_length
            assert sum(log_probs[row, t, s] for t, s in enumerate(path)) == pytest.approx(scores[row], abs=1e-4)


@pytest.mark.parametrize("architecture", ["ctc", "heads"])
def test_architectures_build_for_fixed_and_variable_lengths(smoke_config, architecture):
    for min_length, max_length in ((2, 2), (1, 3)):
        config = smoke_config.replace(architecture=architecture, min_length=min_length, max_length=max_length)
        model = models.new_model(config)
        batch = np.random.default_rng(0).random((3, config.height, config.width, 1), np.float32)
        logits = model.predict(batch, verbose=0)
        readings = decoding.decode(logits, models.get(architecture).output, Vocab.from_config(config))
        assert len(readings) == 3 and all(set(r.text) <= set(config.charset) for r in readings)


def test_ctc_reads_width_over_four_frames_and_more_for_long_labels(smoke_config):
    config = smoke_config.replace(architecture="ctc", width=100, height=60, max_length=6, min_length=4)
    assert models.new_model(config).output_shape == (None, 25, len(config.charset) + 1)
    long_labels = config.replace(width=48, max_length=8)
    assert models.new_model(long_labels).output_shape == (None, 24, len(config.charset) + 1)


def test_ctc_loss_learns_variable_length_labels(smoke_config):
    """A few real steps on labels of 1 to 3 characters: finite, falling loss."""
    config = smoke_config.replace(architecture="ctc", min_length=1, max_length=3, learning_rate=0.01)
    model = models.new_model(config)
    vocab = Vocab.from_config(config)
    rng = np.random.default_rng(1)
    labels = ["".join(rng.choice(list(config.charset), rng.integers(1, 4))) for _ in range(32)]
    images = rng.random((32, config.height, config.width, 1), np.float32)
    history = model.fit(images, vocab.encode_many(labels), epochs=8, batch_size=32, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_each_image_of_a_batch_gets_its_own_augmentation():
    white = np.ones((8, 40, 80, 1), np.float32)
    white[:, 15:25, 30:50] = 0.0  # the same dark block in every image
    augmented = Augmenter(1.0, seed=3)(tf.constant(white)).numpy()
    assert augmented.shape == white.shape and 0.0 <= augmented.min() and augmented.max() <= 1.0
    differences = [np.abs(augmented[i] - augmented[j]).mean() for i in range(8) for j in range(i + 1, 8)]
    assert min(differences) > 0.01  # no two images share a shift, rotation or noise
    dark = [np.argwhere(image[..., 0] < 0.3).mean(axis=0) for image in augmented]
    assert np.std([centre[1] for centre in dark]) > 0.5  # the block moved by a different amount in each
    assert np.array_equal(Augmenter(0.0)(tf.constant(white)).numpy(), white)

