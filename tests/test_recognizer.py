import io
import json
import os
import shutil

import numpy as np
import pytest

from kcaptcha.data import generate, images
import kcaptcha


@pytest.fixture(scope="module")
def recognizer(smoke_model_dir):
    return kcaptcha.load_model(smoke_model_dir, tta=0)


@pytest.fixture(scope="module")
def samples(smoke_config):
    renderer = generate.CaptchaRenderer.from_config(smoke_config, seed=11)
    return [renderer.render(i) for i in range(6)]


def test_public_api_is_small():
    assert set(kcaptcha.__all__) == {"Config", "Recognizer", "load_model", "__version__"}
    assert kcaptcha.Config().name == "digits"


def test_save_load_gives_identical_predictions(recognizer, smoke_model_dir, samples):
    import keras

    batch = np.stack([recognizer.preprocess(image) for _, image in samples])[..., None]
    direct = keras.models.load_model(os.path.join(smoke_model_dir, "model.keras")).predict(batch, verbose=0)
    expected = recognizer.decode(direct)
    assert recognizer.predict([image for _, image in samples]) == expected
    again = kcaptcha.load_model(smoke_model_dir, tta=0)
    assert again.predict([image for _, image in samples]) == expected


def test_prediction_shape_and_confidences(recognizer, samples, smoke_config):
    for _, image in samples:
        prediction = recognizer.predict(image)
        assert isinstance(prediction, kcaptcha.reading.recognizer.Prediction)
        assert set(prediction.text) <= set(smoke_config.charset)
        assert len(prediction.char_confidences) == len(prediction.text)
        assert all(0.0 <= c <= 1.0 for c in prediction.char_confidences) and 0.0 <= prediction.confidence <= 1.0
        if not smoke_config.min_length <= len(prediction.text) <= smoke_config.max_length:
            assert prediction.confidence == 0.0  # a reading of impossible length is never trusted
        assert json.dumps(prediction.to_dict())


def test_every_input_kind_gives_the_same_answer(recognizer, samples, tmp_path):
    _, image = samples[1]
    path = tmp_path / "x.png"
    image.save(path)
    payload = path.read_bytes()
    expected = recognizer.predict(image)
    kinds = [str(path), path, payload, bytearray(payload), memoryview(payload), np.asarray(image),
             np.asarray(image.convert("L")), np.asarray(image.convert("L"))[..., None],
             np.asarray(image.convert("L"), np.float32) / 255.0, image.convert("RGBA"), image.convert("L")]
    for item in kinds:
        assert recognizer.predict(item).text == expected.text, type(item)
    batch = np.stack([np.asarray(image.convert("L"))] * 3)[..., None]
    assert [p.text for p in recognizer.predict(batch)] == [expected.text] * 3
    with pytest.raises(ValueError, match=r"Received shape \(3, \d+, \d+\); for a batch of gray images .*add a "
                       r"channel axis"):
        recognizer.predict(batch[..., 0])  # [n, h, w] looks like one image: refused, with a hint


def test_other_sizes_and_modes_never_raise_shape_errors(recognizer, samples):
    _, image = samples[2]
    for size in ((200, 50), (17, 90), (1000, 300)):
        for mode in ("RGB", "L", "RGBA", "P", "1", "I;16"):
            variant = image.resize(size)
            variant = variant.convert(mode) if mode != "I;16" else variant.convert("L").convert("I;16")
            prediction = recognizer.predict(variant)
            assert set(prediction.text) <= set("0123")


def test_matches_the_tf_data_pipeline_on_native_size_files(recognizer, samples, tmp_path):
    _, image = samples[3]
    path = tmp_path / "y.png"
    image.save(path)
    from_pipeline = images.decode_image(path.read_bytes(), recognizer.height, recognizer.width).numpy()[..., 0]
    assert np.abs(recognizer.preprocess(str(path)) - from_pipeline).max() < 2.0 / 255


@pytest.mark.parametrize("payload, message", [
    (b"", "empty"),
    (b"this is not an image", "not an image"),
])
def test_bad_bytes_are_clear_errors(recognizer, payload, message):
    with pytest.raises(ValueError, match=message):
        recognizer.predict(payload)


def test_truncated_file_names_the_path(recognizer, samples, tmp_path):
    buffer = io.BytesIO()
    samples[0][1].save(buffer, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[:200])
    with pytest.raises(ValueError, match="cut.png"):
        recognizer.predict(str(path))
    with pytest.raises(FileNotFoundError, match="nope.png"):
        recognizer.predict(str(tmp_path / "nope.png"))
    with pytest.raises(ValueError, match="shape"):
        recognizer.predict(np.zeros((2, 3, 4, 5, 6)))
    with pytest.raises(TypeError, match="expected a path"):
        recognizer.predict(12)


def test_missing_or_damaged_model_folder(tmp_path, smoke_model_dir):
    with pytest.raises(FileNotFoundError, match="Model folder not found"):
        kcaptcha.load_model(str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="Model folder not found"):
        kcaptcha.load_model("no_such_shipped_model")
    damaged = tmp_path / "damaged"
    shutil.copytree(smoke_model_dir, damaged)
    (damaged / "model.keras").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="Damaged model folder"):
        kcaptcha.load_model(str(damaged))
    (damaged / "metadata.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        kcaptcha.load_model(str(damaged))
    (damaged / "metadata.json").unlink()
    with pytest.raises(FileNotFoundError, match="metadata.json is missing"):
        kcaptcha.load_model(str(damaged))


@pytest.fixture(scope="module")
def digits_samples():
    renderer = generate.CaptchaRenderer("0123456789", 4, 4, 100, 60, seed=20261130)
    return [renderer.render(i) for i in range(200)]


def test_the_shipped_model_reads_captchas_and_confidences_mean_the_same_on_every_backend(digits_samples):
    pictures = [image for _, image in digits_samples]
    truths = [label for label, _ in digits_samples]
    readings = {backend: kcaptcha.load_model("digits", backend=backend) for backend in ("keras", "onnx")}
    assert readings["onnx"].backend == "onnx (model.int8.onnx)"
    results = {backend: recognizer.predict(pictures) for backend, recognizer in readings.items()}
    for backend, predictions in results.items():
        assert np.mean([p.text == t for p, t in zip(predictions, truths)]) >= 0.98, backend
    keras_confidence = np.array([p.confidence for p in results["keras"]])
    int8_confidence = np.array([p.confidence for p in results["onnx"]])
    assert int8_confidence.max() > 0.995  # an int8 softmax capped every confidence at (254/255)^4 = 0.9844
    gaps = np.abs(keras_confidence - int8_confidence)
    assert gaps.mean() < 0.01 and np.median(gaps) < 0.005
