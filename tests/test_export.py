import json
import shutil

import numpy as np
import pytest

from kcaptcha.data import generate
from kcaptcha.export import onnx as export
from kcaptcha.reading import decoding
from kcaptcha.reading.vocab import Vocab
import kcaptcha


@pytest.fixture(scope="module")
def exported_dir(smoke_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported") / "model"
    shutil.copytree(smoke_model_dir, folder)
    export.export_onnx(str(folder), calibration_size=128, check_size=200)
    return folder


def test_export_writes_onnx_files_and_records_agreement(exported_dir):
    metadata = json.loads((exported_dir / "metadata.json").read_text())
    entry = metadata["export"]
    assert (exported_dir / entry["onnx"]).stat().st_size > 1000
    assert (exported_dir / entry["int8"]).stat().st_size > 1000
    assert entry["onnx_agreement"] >= 0.99  # float32 ONNX computes what Keras computes
    assert entry["check_images"] == 200
    # The recorded int8 agreement is what the written int8 file reads on the check images, against Keras.
    metadata = json.loads((exported_dir / "metadata.json").read_text())
    check = export._own_images(metadata, 128, 200, 31337)[1]  # the images export_onnx checked on
    vocab = Vocab(metadata["charset"], metadata["min_length"], metadata["max_length"])
    keras_readings = decoding.decode(export.load_keras_model(str(exported_dir)).predict(check, verbose=0),
                                     metadata["output"], vocab)
    int8 = export.onnx_session(str(exported_dir / entry["int8"]))
    int8_readings = decoding.decode(int8.run(None, {export.INPUT_NAME: check})[0], metadata["output"], vocab)
    assert entry["int8_agreement"] == pytest.approx(export.compare(keras_readings, int8_readings)["agreement"])


def test_onnx_backend_reads_like_keras(exported_dir, smoke_config):
    renderer = generate.CaptchaRenderer.from_config(smoke_config, seed=21)
    images = [renderer.render(i)[1] for i in range(50)]
    on_keras = kcaptcha.load_model(str(exported_dir), backend="keras")
    on_onnx = kcaptcha.load_model(str(exported_dir), backend="onnx")
    assert on_keras.backend == "keras" and on_onnx.backend.startswith("onnx")
    keras_texts = [p.text for p in on_keras.predict(images)]
    onnx_texts = [p.text for p in on_onnx.predict(images)]
    agreement = np.mean([a == b for a, b in zip(keras_texts, onnx_texts)])
    assert agreement >= 0.9
    assert kcaptcha.load_model(str(exported_dir)).backend == on_onnx.backend  # auto prefers ONNX


def test_onnx_backend_without_an_export_is_a_clear_error(smoke_model_dir):
    with pytest.raises(ValueError, match="has no ONNX export; run bin/export"):
        kcaptcha.load_model(smoke_model_dir, backend="onnx")
    with pytest.raises(ValueError, match="backend must be one of"):
        kcaptcha.load_model(smoke_model_dir, backend="tflite")
    assert kcaptcha.load_model(smoke_model_dir).backend == "keras"


def test_int8_backend_runs_the_int8_export_even_below_the_agreement_bar(exported_dir, tmp_path):
    doubtful = tmp_path / "doubtful"
    shutil.copytree(exported_dir, doubtful)
    metadata = json.loads((doubtful / "metadata.json").read_text())
    metadata["export"].update(int8_agreement=export.MIN_AGREEMENT - 0.01,
                              int8_fallback_agreement=export.MIN_AGREEMENT - 0.01)
    (doubtful / "metadata.json").write_text(json.dumps(metadata))
    assert kcaptcha.load_model(str(doubtful)).backend == "onnx (model.onnx)"  # auto: the float export
    assert kcaptcha.load_model(str(doubtful), backend="int8").backend == "onnx (model.int8.onnx)"


def test_auto_reads_unsure_int8_readings_again_in_float_when_that_agrees(exported_dir, smoke_config, tmp_path):
    entry = json.loads((exported_dir / "metadata.json").read_text())["export"]
    assert entry["int8_fallback_below"] in export.FALLBACK_CHOICES and 0.0 <= entry["int8_fallback_share"] <= 1.0
    assert entry["int8_fallback_agreement"] >= entry["int8_agreement"] - 0.01  # floats where int8 is unsure
    renderer = generate.CaptchaRenderer.from_config(smoke_config, seed=23)
    images = [renderer.render(i)[1] for i in range(40)]
    int8 = kcaptcha.load_model(str(exported_dir), backend="int8", tta=0).predict(images)
    float32 = kcaptcha.load_model(str(exported_dir), backend="float", tta=0)
    assert float32.backend == "onnx (model.onnx)"
    float32 = float32.predict(images)
    below = float(np.median([r.confidence for r in int8]))  # half the images read again
    doubtful = tmp_path / "doubtful"
    shutil.copytree(exported_dir, doubtful)
    metadata = json.loads((doubtful / "metadata.json").read_text())
    metadata["export"].update(int8_agreement=export.MIN_AGREEMENT - 0.01, int8_fallback_below=below,
                              int8_fallback_agreement=export.MIN_AGREEMENT)
    (doubtful / "metadata.json").write_text(json.dumps(metadata))
    both = kcaptcha.load_model(str(doubtful), tta=0)
    assert both.backend == f"onnx (model.int8.onnx; model.onnx under {below:g})"
    for reading, quantized, exact in zip(both.predict(images), int8, float32):
        expected = exact if quantized.confidence < below else quantized
        assert reading.text == expected.text and reading.confidence == pytest.approx(expected.confidence, rel=1e-5)
    assert sum(q.confidence < below for q in int8) >= 10
    metadata["export"]["int8_fallback_agreement"] = export.MIN_AGREEMENT - 0.001  # not enough: float alone
    (doubtful / "metadata.json").write_text(json.dumps(metadata))
    assert kcaptcha.load_model(str(doubtful)).backend == "onnx (model.onnx)"


def test_int8_backend_without_an_int8_export_is_a_clear_error(exported_dir, smoke_model_dir, tmp_path):
    float_only = tmp_path / "float_only"
    shutil.copytree(exported_dir, float_only)
    metadata = json.loads((float_only / "metadata.json").read_text())
    del metadata["export"]["int8"]
    (float_only / "metadata.json").write_text(json.dumps(metadata))
    for folder in (float_only, smoke_model_dir):
        with pytest.raises(ValueError, match="no int8 ONNX export"):
            kcaptcha.load_model(str(folder), backend="int8")


def test_damaged_onnx_file_names_the_folder(exported_dir, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(exported_dir, damaged)
    for name in ("model.onnx", "model.int8.onnx"):
        (damaged / name).write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="Damaged model folder"):
        kcaptcha.load_model(str(damaged), backend="onnx")


def test_the_fallback_threshold_is_the_lowest_choice_whose_readings_agree():
    from kcaptcha.reading.decoding import Prediction

    def reading(text, confidence):
        return Prediction(text, confidence, (confidence,) * len(text))

    reference = [reading("ab", 0.99)] * 1000
    exact = list(reference)
    # int8 flips five readings: two it is unsure of (0.5), three it reads at 0.85 (under 0.9, not under 0.8).
    quantized = reference[:995] + [reading("xx", 0.5)] * 2 + [reading("xx", 0.85)] * 3
    assert export.fallback_threshold(reference, quantized, exact) == {
        "int8_fallback_below": 0.9, "int8_fallback_agreement": 1.0, "int8_fallback_share": 0.005}
    unsure = reference[:995] + [reading("xx", 0.5)] * 5
    assert export.fallback_threshold(reference, unsure, exact)["int8_fallback_below"] == 0.8
    stubborn = reference[:997] + [reading("xx", 0.97)] * 3  # sure and wrong: no threshold helps
    assert export.fallback_threshold(reference, stubborn, exact) == {
        "int8_fallback_below": 0.95, "int8_fallback_agreement": 0.997, "int8_fallback_share": 0.0}


def test_a_model_trained_on_files_is_quantized_and_checked_on_its_own_images(tmp_path, smoke_config):
    from kcaptcha.training.train import train
    from tests.conftest import write_captchas

    write_captchas(str(tmp_path / "train"), smoke_config, 30)
    write_captchas(str(tmp_path / "val"), smoke_config, 12, seed=8)
    config = smoke_config.replace(train_dir=str(tmp_path / "train"), val_dir=str(tmp_path / "val"), max_steps=10)
    summary = train(config, str(tmp_path / "run"), save_dir=str(tmp_path / "model"), verbose=0)
    entry = export.export_onnx(summary["saved_to"], calibration_size=16, check_size=100)
    assert entry["images_from"] == f"the model's own images: {tmp_path / 'train'} and {tmp_path / 'val'}"
    # Checked on the 12 validation images, the 14 training images calibration left over, and warped copies
    # of those and the 16 calibration images up to check_size: not on 12 images alone.
    assert (entry["calibration_images"], entry["check_images"], entry["check_warped_copies"]) == (16, 100, 74)
