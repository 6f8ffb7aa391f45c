import csv
import io
import json
import os
import subprocess
import sys

import pytest

from kcaptcha.evaluate import collect_inputs, evaluate_paths
from tests.conftest import write_captchas


def run_bin(repo_root, name, *args):
    return subprocess.run([sys.executable, os.path.join(repo_root, "bin", name), *args], capture_output=True,
                          text=True, timeout=300, cwd=repo_root)


@pytest.fixture
def nested_folder(tmp_path, smoke_config):
    write_captchas(str(tmp_path / "imgs"), smoke_config, 5)
    write_captchas(str(tmp_path / "imgs" / "sub"), smoke_config, 3, first=5)
    return tmp_path / "imgs"


def test_predict_prints_one_line_per_image_recursively(repo_root, smoke_model_dir, nested_folder):
    result = run_bin(repo_root, "predict", f"--model={smoke_model_dir}", str(nested_folder))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 8
    path, text, confidence = lines[0].split("\t")
    assert os.path.exists(path) and len(text) == 2 and 0.0 <= float(confidence) <= 1.0
    assert "accuracy:" in result.stderr and "/8 =" in result.stderr


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_predict_formats(repo_root, smoke_model_dir, nested_folder, fmt):
    result = run_bin(repo_root, "predict", f"--model={smoke_model_dir}", f"--format={fmt}", "--noprogress",
                     str(nested_folder))
    assert result.returncode == 0, result.stderr[-2000:]
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
        assert len(rows) == 8 and set(rows[0]) == {"path", "text", "confidence"}
    else:
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(rows) == 8 and {"path", "text", "confidence", "char_confidences"} <= set(rows[0])


def test_predict_reports_unreadable_files_and_fails(repo_root, smoke_model_dir, nested_folder):
    (nested_folder / "broken_1.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    result = run_bin(repo_root, "predict", f"--model={smoke_model_dir}", str(nested_folder))
    assert result.returncode == 1
    assert "broken_1.png" in result.stderr
    assert len(result.stdout.strip().splitlines()) == 8  # the good ones are still read


def test_predict_on_a_folder_with_no_images(repo_root, smoke_model_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    result = run_bin(repo_root, "predict", f"--model={smoke_model_dir}", str(tmp_path))
    assert result.returncode != 0 and "No images" in result.stderr


def test_predict_with_a_missing_model(repo_root, nested_folder, tmp_path):
    result = run_bin(repo_root, "predict", f"--model={tmp_path / 'none'}", str(nested_folder))
    assert result.returncode != 0 and "Model folder not found" in result.stderr


def test_evaluate_reports_accuracies_and_copies_errors(repo_root, smoke_model_dir, nested_folder, tmp_path):
    errors = tmp_path / "misread"
    report_path = tmp_path / "report.json"
    result = run_bin(repo_root, "evaluate", f"--model={smoke_model_dir}", f"--errors_dir={errors}",
                     f"--output_json={report_path}", str(nested_folder))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(report_path.read_text())
    assert report["evaluated"] == 8
    assert len(report["per_position_accuracy"]) == 2
    assert 0.0 <= report["image_accuracy"] <= report["character_accuracy"] <= 1.0 or report["image_accuracy"] == 0
    assert report["images_per_second"] > 0 and report["ms_per_image"] > 0
    assert len(list(errors.iterdir())) == len(report["errors"])
    assert "whole-image accuracy" in result.stdout and "per-position accuracy" in result.stdout


def test_evaluate_counts_right_and_wrong(smoke_model_dir, nested_folder):
    import kcaptcha

    recognizer = kcaptcha.load_model(smoke_model_dir)
    paths = collect_inputs([str(nested_folder)])
    report = evaluate_paths(recognizer, paths, progress=False)
    predictions = recognizer.predict(paths)
    right = sum(p.text == os.path.basename(path).split("_")[0] for path, p in zip(paths, predictions))
    assert report["image_accuracy"] == pytest.approx(right / len(paths))
    assert len(report["errors"]) == len(paths) - right
