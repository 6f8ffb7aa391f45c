"""bin/export --format=savedmodel|tflite: each export, loaded as a model server or a phone would load it, reads
fresh captchas as `Recognizer` does (>= 99.8% the same text), for position heads and for CTC."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kcaptcha.data import images
from kcaptcha.data.generate import CaptchaRenderer
from kcaptcha.export import saving
from kcaptcha.export import serving as serving_export
from kcaptcha.export.onnx import MIN_AGREEMENT
from kcaptcha.reading import decoding
from kcaptcha.reading.recognizer import load_model
from kcaptcha.reading.vocab import Vocab

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECK_IMAGES = 500


def fresh_captchas(metadata: dict, count: int = CHECK_IMAGES, seed: int = 97):
    """Captchas none of the exports saw (they check themselves on seed 4242)."""
    renderer = CaptchaRenderer(metadata["charset"], metadata["min_length"], metadata["max_length"],
                               metadata["width"], metadata["height"], seed=seed)
    return [renderer.render(index)[1] for index in range(count)]


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def random_model_dir(root, config) -> str:
    """An untrained model of `config` whose output layers are redrawn so that its readings vary a lot: every
    class, repeats and blanks, texts of every length (CTC included), and logits far from ties."""
    import keras

    from kcaptcha import models

    model = models.new_model(config)
    metadata = saving.build_metadata(config, training={}, metrics={})
    sample = np.stack([images.to_model_input(image, config.width, config.height)
                       for image in fresh_captchas(metadata, 64, seed=5)])[..., None]
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense) and (layer.name == "logits" or layer.name.startswith("char_")):
            features = keras.Model(model.input, layer.input).predict(sample, verbose=0)
            features = features.reshape(-1, features.shape[-1])
            kernel = rng.normal(0.0, 1.0, layer.kernel.shape) * 6.0 / (features.std(0, keepdims=True).T + 1e-6) \
                / np.sqrt(features.shape[-1])
            bias = -features.mean(0) @ kernel  # logits ~ N(0, 6^2) over images and frames
            if config.architecture == "ctc":
                bias[-1] += 8.0  # blanks common enough that greedy readings fall short of min_length too
            layer.set_weights([kernel, bias])
    return saving.save_model_folder(model, metadata, str(root / config.architecture))


MODELS = {
    "digits": lambda root, config: saving.resolve_model_dir("digits"),  # the shipped, trained model
    "ctc": lambda root, config: random_model_dir(root, config.replace(architecture="ctc", min_length=2,
                                                                      max_length=4)),
    "heads_variable_length": lambda root, config: random_model_dir(
        root, config.replace(architecture="heads", min_length=1, max_length=3)),
}


@pytest.fixture(scope="module", params=list(MODELS))
def model_dir(request, tmp_path_factory, smoke_config):
    return MODELS[request.param](tmp_path_factory.mktemp(request.param), smoke_config)


def readings_to_check(model_dir):
    metadata = saving.read_metadata(model_dir)
    pil_images = fresh_captchas(metadata)
    recognizer = load_model(model_dir, backend="keras", tta=0)
    reference = recognizer.predict(pil_images)
    texts = [p.text for p in reference]
    if metadata["output"] == "ctc" and not metadata.get("training"):  # the redrawn model: the reading rules
        # must be exercised (greedy lengths out of range both ways, repeats), not only what a trained model reads
        logits = recognizer.logits(np.stack([recognizer.preprocess(image) for image in pil_images]))
        greedy = [len(p.text) for p in decoding.decode(logits, "ctc", Vocab(metadata["charset"], 0, 99))]
        assert len(set(texts)) > 50 and min(greedy) < metadata["min_length"] and max(greedy) > metadata["max_length"]
        assert any(len(t) != metadata["max_length"] for t in texts) and any(a == b for t in texts for a, b in
                                                                            zip(t, t[1:]))
    if metadata["min_length"] != metadata["max_length"]:
        assert len({len(t) for t in texts}) > 1
    return metadata, pil_images, reference


def assert_agrees(reference, texts, confidences):
    agreement = np.mean([r.text == t for r, t in zip(reference, texts)])
    assert agreement >= MIN_AGREEMENT, [(r.text, t) for r, t in zip(reference, texts) if r.text != t]
    same = [i for i, (r, t) in enumerate(zip(reference, texts)) if r.text == t]
    np.testing.assert_allclose([reference[i].confidence for i in same], np.asarray(confidences)[same], atol=2e-3)


def test_savedmodel_signature_reads_encoded_images_like_the_recognizer(model_dir, tmp_path):
    import tensorflow as tf

    report = serving_export.export_savedmodel(model_dir, str(tmp_path / "savedmodel" / "1"), check_size=20)
    assert report["agreement"] >= MIN_AGREEMENT and report["check_images"] == 20
    metadata, pil_images, reference = readings_to_check(model_dir)
    signature = tf.saved_model.load(str(tmp_path / "savedmodel" / "1")).signatures["serving_default"]
    assert set(signature.structured_outputs) == {"text", "confidence"}
    result = signature(image_bytes=tf.constant([png(image) for image in pil_images]))
    assert_agrees(reference, [t.decode() for t in result["text"].numpy()], result["confidence"].numpy())


def test_tflite_model_reads_pixels_like_the_recognizer(model_dir, tmp_path):
    path = str(tmp_path / "model.tflite")
    report = serving_export.export_tflite(model_dir, path, check_size=20)
    assert report["agreement"] >= MIN_AGREEMENT
    metadata, pil_images, reference = readings_to_check(model_dir)
    sidecar = json.loads(open(path + ".json").read())
    assert sidecar["charset"] == metadata["charset"] and (sidecar["width"], sidecar["height"]) == (
        metadata["width"], metadata["height"])
    pixels = np.stack([images.to_model_input(image, sidecar["width"], sidecar["height"]) for image in pil_images])
    texts, confidences = serving_export.run_tflite(path, pixels, sidecar["charset"])
    assert_agrees(reference, texts, confidences)


def test_an_exports_agreement_is_the_share_of_texts_read_as_keras_reads_them(smoke_model_dir):
    """SavedModel, TFLite and ONNX exports are compared with Keras alike (`onnx.compare`) and held to one bar."""
    pil_images = fresh_captchas(saving.read_metadata(smoke_model_dir), 10)
    reference = load_model(smoke_model_dir, backend="keras", tta=0).predict(pil_images)
    texts = [r.text for r in reference]
    texts[3] += "?"
    report = serving_export.agreement(smoke_model_dir, pil_images, texts, [r.confidence + 0.01 for r in reference])
    assert report["agreement"] == 0.9 and report["check_images"] == 10 and MIN_AGREEMENT == 0.998
    assert report["max_confidence_gap"] == pytest.approx(0.01, abs=1e-6)


def test_reading_in_the_graph_follows_the_numpy_rules_on_hand_made_logits():
    """Greedy CTC: repeats collapse, blanks split them; a length outside min..max is read again as the best
    path of an allowed length, as `kcaptcha.reading.decoding` does."""
    metadata = {"charset": "ab", "output": "ctc", "min_length": 2, "max_length": 3}
    frames = [[0, 0, 2, 0, 1], [2, 1, 1, 2, 2], [0, 2, 0, 2, 0]]  # "aab" (a, a split by a blank), "b", "aaa"
    logits = np.full((3, 5, 3), -1.0, np.float32)
    strengths = np.random.default_rng(3).uniform(0.5, 4.0, (3, 5))  # each frame its own certainty
    for row, ids in enumerate(frames):
        logits[row, np.arange(5), ids] = strengths[row]
    ids, confidence = serving_export.read_logits(logits, metadata)
    texts = ["".join("ab"[i] for i in row if i >= 0) for row in ids.numpy()]
    expected = decoding.decode(logits, "ctc", Vocab("ab", 2, 3))
    assert texts == [p.text for p in expected]
    assert texts[0] == "aab" and texts[2] == "aaa" and len(texts[1]) == 2  # "b" alone is too short
    np.testing.assert_allclose(confidence.numpy(), [p.confidence for p in expected], rtol=1e-5)
    assert 0.0 < confidence.numpy()[1] < confidence.numpy()[0]
    alone, alone_confidence = serving_export.read_logits(logits[[0, 2]], metadata)  # a batch with nothing to redo
    assert alone.numpy().tolist() == ids.numpy()[[0, 2]].tolist()
    np.testing.assert_allclose(alone_confidence.numpy(), confidence.numpy()[[0, 2]], rtol=1e-6)


def test_reading_in_the_graph_matches_numpy_on_random_logits_of_every_length():
    rng = np.random.default_rng(11)
    metadata = {"charset": "abcd", "output": "ctc", "min_length": 3, "max_length": 4}
    logits = rng.normal(0.0, 2.0, (300, 12, 5)).astype(np.float32)
    logits[:, :, 4] += rng.uniform(-1.0, 3.0, (300, 1))  # some rows mostly blank (short), some not (long)
    expected = decoding.decode(logits, "ctc", Vocab("abcd", 3, 4))
    greedy_lengths = [len(p.text) for p in decoding.decode(logits, "ctc", Vocab("abcd", 0, 12))]
    assert min(greedy_lengths) < 3 and max(greedy_lengths) > 4  # both ways out of range are exercised
    ids, confidence = serving_export.read_logits(logits, metadata)
    texts = ["".join("abcd"[i] for i in row if i >= 0) for row in ids.numpy()]
    assert texts == [p.text for p in expected]
    np.testing.assert_allclose(confidence.numpy(), [p.confidence for p in expected], rtol=1e-4, atol=1e-7)


def test_cli_exports_tflite_and_rejects_output_for_onnx_and_stray_arguments(tmp_path, smoke_config):
    model_dir = random_model_dir(tmp_path, smoke_config.replace(architecture="ctc"))
    export = os.path.join(REPO_ROOT, "bin", "export")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, export, f"--model={model_dir}", "--format=tflite",
                             f"--output={tmp_path / 'phone' / 'm.tflite'}", "--check_size=30"],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["format"] == "tflite" and report["check_images"] == 30 and (tmp_path / "phone" / "m.tflite").exists()
    wrong = subprocess.run([sys.executable, export, f"--model={model_dir}", f"--output={tmp_path / 'x'}"],
                           capture_output=True, text=True, timeout=600, env=env)
    assert wrong.returncode == 2 and wrong.stderr.startswith("error: --output is for")
    # A folder given without --model would have re-exported the default (shipped) model; now it is refused.
    shipped = os.path.join(saving.SHIPPED_MODELS_DIR, "digits", "metadata.json")
    before = os.stat(shipped).st_mtime_ns
    stray = subprocess.run([sys.executable, export, str(model_dir)], capture_output=True, text=True, timeout=600,
                           env=env, cwd=tmp_path)
    assert stray.returncode == 2 and stray.stderr.startswith("error: unexpected arguments: "), stray.stderr[-500:]
    assert "--model=" in stray.stderr and os.stat(shipped).st_mtime_ns == before


def test_a_model_trained_on_files_checks_its_exports_on_its_own_images(tmp_path, smoke_config):
    """Not on synthetic captchas, which are not the user's look: its validation images first, then its
    training images, then warped copies of them up to the check size."""
    from kcaptcha.training.train import train
    from tests.conftest import write_captchas

    train_paths = write_captchas(str(tmp_path / "train"), smoke_config, 30)
    val_paths = write_captchas(str(tmp_path / "val"), smoke_config, 12, seed=8)
    config = smoke_config.replace(train_dir=str(tmp_path / "train"), val_dir=str(tmp_path / "val"), max_steps=10)
    model_dir = train(config, str(tmp_path / "run"), save_dir=str(tmp_path / "model"), verbose=0)["saved_to"]
    metadata = saving.read_metadata(model_dir)

    pil_images, where = serving_export.check_images(metadata, 50, seed=4242)
    assert where == (f"the model's own images: {tmp_path / 'train'} and {tmp_path / 'val'} "
                     "(8 of them warped copies)")
    own = {path: images.to_model_input(path, config.width, config.height) for path in train_paths + val_paths}

    def which(image):
        pixels = images.to_model_input(image, config.width, config.height)
        return [path for path, mine in own.items() if np.abs(pixels - mine).max() <= 1 / 255]

    found = [which(image) for image in pil_images]
    assert [match for match, in found[:12]] == sorted(val_paths)
    assert {match for match, in found[12:42]} == set(train_paths) and found[42:] == [[]] * 8

    report = serving_export.export_tflite(model_dir, str(tmp_path / "model.tflite"), check_size=50)
    assert report["check_images"] == 50 and report["images_from"] == where
