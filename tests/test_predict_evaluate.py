"""bin/predict, bin/evaluate and kcaptcha.reading.evaluate with the shipped digits model, so wrong answers show."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from kcaptcha.files import collect_inputs, LabelRule
from kcaptcha.reading import metrics
from kcaptcha.reading.evaluate import evaluate_paths

DIGITS_TASK = ["--charset=0123456789", "--min_length=4", "--max_length=4", "--width=100", "--height=60"]


def run_bin(repo_root, name, *args):
    return subprocess.run([sys.executable, os.path.join(repo_root, "bin", name), *args], capture_output=True,
                          text=True, timeout=300, cwd=repo_root)


def write_digits(folder, count, name=lambda index, label: f"{label}_{index}.png", seed=11, first=0):
    """Writes `count` captchas of the shipped digits model's task; returns {path: true label}."""
    from kcaptcha.data.generate import CaptchaRenderer

    renderer = CaptchaRenderer("0123456789", 4, 4, 100, 60, seed=seed)
    os.makedirs(folder, exist_ok=True)
    truths = {}
    for index in range(first, first + count):
        label, image = renderer.render(index)
        path = os.path.join(str(folder), name(index, label))
        image.save(path)
        truths[path] = label
    return truths


@pytest.fixture(scope="module")
def digits():
    import kcaptcha

    return kcaptcha.load_model("digits")


@pytest.fixture
def digits_folder(tmp_path):
    """12 labelled digits captchas, 8 at the top and 4 in `sub/`: (folder, {path: true label})."""
    folder = tmp_path / "imgs"
    truths = write_digits(folder, 8)
    truths.update(write_digits(folder / "sub", 4, first=8))
    return folder, truths


def readings(recognizer, paths):
    return {path: prediction.text for path, prediction in zip(paths, recognizer.predict(list(paths)))}


def test_predict_prints_one_line_per_image_recursively(repo_root, digits, digits_folder):
    folder, truths = digits_folder
    planted, wrong, true_label = plant_a_mislabelled_copy(folder, truths)
    result = run_bin(repo_root, "predict", "--model=digits", str(folder))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert [path for path, _, _ in lines] == collect_inputs([str(folder)])  # sorted, recursive
    assert sorted(path for path, _, _ in lines) == sorted([*truths, planted])
    assert all(0.0 <= float(confidence) <= 1.0 for _, _, confidence in lines)
    assert {path: text for path, text, _ in lines} == readings(digits, [*truths, planted])
    assert sum(text == truths[path] for path, text, _ in lines if path in truths) >= 11  # a trained model
    labels = {**truths, planted: wrong}  # what the names say: the planted copy is a sure misread
    right = sum(text == labels[path] for path, text, _ in lines)
    assert right <= 12 and result.stderr.strip().splitlines()[-1] == (
        f"accuracy: {right}/13 = {right / 13:.4f} on images whose names carry labels")


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_predict_formats(repo_root, digits_folder, fmt):
    folder, truths = digits_folder
    result = run_bin(repo_root, "predict", "--model=digits", f"--format={fmt}", "--noprogress", str(folder))
    assert result.returncode == 0, result.stderr[-2000:]
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
        assert set(rows[0]) == {"path", "text", "confidence"}
    else:
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert {"path", "text", "confidence", "char_confidences"} <= set(rows[0])
        assert all(len(row["char_confidences"]) == 4 for row in rows)
    assert sorted(row["path"] for row in rows) == sorted(truths)
    assert sum(row["text"] == truths[row["path"]] for row in rows) >= 11


def test_predict_reports_unreadable_files_and_fails(repo_root, digits_folder):
    folder, truths = digits_folder
    (folder / "broken_1.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    result = run_bin(repo_root, "predict", f"--model={os.path.join(repo_root, 'kcaptcha', 'saved_models', 'digits')}",
                     "--noprogress", str(folder))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken_1.png" in errors[0]
    assert "1 of 13 files could not be read" in result.stderr
    lines = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert sorted(path for path, _, _ in lines) == sorted(truths)  # the good ones are still read
    assert sum(text == truths[path] for path, text, _ in lines) >= 11


def one_error_line(result, code, says):
    assert result.returncode == code, result.stderr[-2000:]
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.stderr


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_runtime_errors_exit_1_with_one_line(repo_root, digits_folder, tmp_path, command):
    folder, _ = digits_folder
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "notes.txt").write_text("hi")
    one_error_line(run_bin(repo_root, command, f"--model={tmp_path / 'none'}", str(folder)), 1,
                   "Model folder not found")
    one_error_line(run_bin(repo_root, command, str(tmp_path / "texts")), 1, "No images")
    one_error_line(run_bin(repo_root, command, str(tmp_path / "ghost")), 1, "No such file or folder")


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_usage_errors_exit_2_with_one_line_and_help_exits_0(repo_root, digits_folder, command):
    folder, _ = digits_folder
    one_error_line(run_bin(repo_root, command), 2, "give ")
    one_error_line(run_bin(repo_root, command, "--bogus", str(folder)), 2, "Unknown command line flag 'bogus'")
    one_error_line(run_bin(repo_root, command, "--backend=tpu", str(folder)), 2, "--backend")
    one_error_line(run_bin(repo_root, command, "--label_from=[0-9]+", str(folder)), 2, "a group named 'label'")
    helped = run_bin(repo_root, command, "--help")
    assert helped.returncode == 0 and f"bin/{command}" in helped.stdout and "--label_from" in helped.stdout


def plant_a_mislabelled_copy(folder, truths):
    """A copy of a captcha whose name carries a label one character off its true one: a sure misread."""
    source = sorted(truths)[0]
    true_label = truths[source]
    wrong = str((int(true_label[0]) + 1) % 10) + true_label[1:]
    planted = str(folder / f"{wrong}_planted.png")
    shutil.copy(source, planted)
    return planted, wrong, true_label


def test_evaluate_counts_right_and_wrong_against_the_true_labels(digits, digits_folder):
    folder, truths = digits_folder
    planted, wrong, true_label = plant_a_mislabelled_copy(folder, truths)
    # A label the model cannot spell is a misread, not an unlabelled image: a model whose charset lost a
    # character must not score higher for it.
    (folder / "abc_1.png").write_bytes((folder / os.path.basename(planted)).read_bytes())
    (folder / "unlabelled.png").write_bytes((folder / os.path.basename(planted)).read_bytes())
    paths = collect_inputs([str(folder)])
    names = [None if p.endswith("unlabelled.png") else LabelRule("prefix").label(p) for p in paths]
    report = evaluate_paths(digits, paths, names, progress=False)
    read = readings(digits, paths)
    assert read[planted] == true_label  # the model reads the image, not the name
    labels = {**truths, planted: wrong, str(folder / "abc_1.png"): "abc"}  # what the names say
    right = sum(read[path] == label for path, label in labels.items())
    assert sum(read[path] == truths[path] for path in truths) >= 11
    assert report["images"] == 15 and report["evaluated"] == 14 and report["unlabelled"] == 1
    assert report["labels_the_model_cannot_spell"] == 1
    assert report["image_accuracy"] == pytest.approx(right / 14) and right <= 12
    assert report["character_accuracy"] == pytest.approx(metrics.character_accuracy(
        [labels[p] for p in sorted(labels)], [read[p] for p in sorted(labels)]))
    assert 0.85 < report["character_accuracy"] < 1.0  # "abc" against a 4-digit reading costs 4 characters
    assert {e["path"]: (e["true"], e["predicted"]) for e in report["errors"]} == {
        path: (label, read[path]) for path, label in labels.items() if read[path] != label}
    assert len(report["per_position_accuracy"]) == 4 and min(report["per_position_accuracy"]) >= 11 / 13


def test_evaluate_reports_accuracies_and_copies_errors(repo_root, digits, digits_folder, tmp_path):
    folder, truths = digits_folder
    planted, wrong, true_label = plant_a_mislabelled_copy(folder, truths)
    errors, report_path = tmp_path / "misread", tmp_path / "report.json"
    result = run_bin(repo_root, "evaluate", "--model=digits", f"--errors_dir={errors}",
                     f"--output_json={report_path}", str(folder))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(report_path.read_text())
    labels = {**truths, planted: wrong}
    read = readings(digits, labels)
    right = sum(read[path] == label for path, label in labels.items())
    assert report["evaluated"] == 13 and report["image_accuracy"] == pytest.approx(right / 13)
    assert f"whole-image accuracy: {right / 13:.4f}" in result.stdout and "per-position accuracy" in result.stdout
    assert report["images_per_second"] > 0 and report["ms_per_image"] > 0
    assert sorted(os.listdir(errors)) == sorted(
        f"{label}_as_{read[path]}_{os.path.basename(path)}" for path, label in labels.items() if read[path] != label)
    assert f"{wrong}_as_{true_label}_{os.path.basename(planted)}" in os.listdir(errors)


def test_evaluate_lists_the_surest_misreads_first_where_wrong_labels_show(repo_root, digits, digits_folder):
    """A wrong label is a misread the model is sure of; noise it cannot read is one it is unsure of."""
    from PIL import Image
    import numpy as np

    folder, truths = digits_folder
    planted, wrong, true_label = plant_a_mislabelled_copy(folder, truths)
    noise = np.random.default_rng(5).integers(0, 256, size=(3, 60, 100), dtype=np.uint8)
    for index, pixels in enumerate(noise):  # named to come before the planted copy in the folder's order
        Image.fromarray(pixels).save(folder / f"0000_noise{index}.png")
    result = run_bin(repo_root, "evaluate", "--model=digits", str(folder))
    assert result.returncode == 0, result.stderr[-2000:]
    paths = collect_inputs([str(folder)])
    report = evaluate_paths(digits, paths, [LabelRule("prefix").label(p) for p in paths], progress=False)
    confidences = [error["confidence"] for error in report["errors"]]
    assert report["errors"][0]["path"] == planted and report["errors"][0]["predicted"] == true_label
    assert len(report["errors"]) >= 4 and confidences == sorted(confidences, reverse=True)
    assert confidences[0] > 0.9 > min(confidences)  # the order means something: sure and unsure misreads
    listed = [line.split("\t")[0].strip() for line in result.stdout.splitlines() if line.startswith("  /")]
    assert listed == [error["path"] for error in report["errors"]]
    assert "the surest reading first" in result.stdout


# One naming scheme per test, end to end as a new user would: the same --label_from in every command.
SCHEMES = {
    "stem": ("stem", lambda index, label: f"{label}.png"),
    "suffix": ("suffix", lambda index, label: f"{index:03d}_{label}.png"),
    "regex": (r"^img-(?P<label>\d+)-\d+$", lambda index, label: f"img-{label}-{index}.png"),
}


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_each_naming_scheme_end_to_end(repo_root, digits, tmp_path, scheme):
    label_from, name = SCHEMES[scheme]
    raw, out = tmp_path / "raw", tmp_path / "prepared"
    truths = write_digits(raw, 12, name=name, seed=5)
    assert len(set(truths.values())) == 12  # distinct labels, so that `<label>.png` names are distinct
    read = readings(digits, truths)
    right = sum(read[path] == label for path, label in truths.items())
    assert right >= 11
    flag = f"--label_from={label_from}"

    prepared = run_bin(repo_root, "prepare", flag, f"--input_dir={raw}", f"--output_dir={out}", *DIGITS_TASK,
                       "--split=0.5,0,0.5")
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["accepted"] == 12 and report["rejected_total"] == 0 and report["splits"]["test"] == 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert {os.path.join(str(raw), entry["path"]): entry["label"] for entry in manifest} == truths

    evaluated = run_bin(repo_root, "evaluate", flag, "--model=digits", "--noprogress",
                        f"--output_json={tmp_path / 'raw.json'}", str(raw))
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    report = json.loads((tmp_path / "raw.json").read_text())
    assert report["evaluated"] == 12 and report["unlabelled"] == 0
    assert report["image_accuracy"] == pytest.approx(right / 12)

    predicted = run_bin(repo_root, "predict", flag, "--model=digits", "--noprogress", str(raw))
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert f"accuracy: {right}/12 = {right / 12:.4f}" in predicted.stderr

    # The split folder names files <label>_<name>; evaluate knows that from report.json, with or without the flag.
    right_in_test = sum(read[os.path.join(str(raw), entry["path"])] == entry["label"]
                        for entry in manifest if entry["split"] == "test")  # the same bytes, the same readings
    for extra in ([], [flag]):
        evaluated = run_bin(repo_root, "evaluate", *extra, "--model=digits", "--noprogress",
                            f"--output_json={tmp_path / 'test.json'}", str(out / "test"))
        assert evaluated.returncode == 0, evaluated.stderr[-2000:]
        report = json.loads((tmp_path / "test.json").read_text())
        assert report["evaluated"] == 6 and report["unlabelled"] == 0
        assert report["image_accuracy"] == pytest.approx(right_in_test / 6)


def test_evaluate_reads_the_labels_of_a_folders_labels_csv(repo_root, digits_folder, tmp_path):
    folder, truths = digits_folder
    named = tmp_path / "collected"
    named.mkdir()
    rows = ["filename,label,confidence,status"]
    for index, (path, label) in enumerate(sorted(truths.items())):
        shutil.copy(path, named / f"{index:03d}.png")  # names that carry no label
        rows.append(f"{index:03d}.png,{label},,{'accepted' if index else 'unreviewed'}")
    (named / "labels.csv").write_text("\n".join(rows) + "\n")
    result = run_bin(repo_root, "evaluate", f"--output_json={tmp_path / 'report.json'}", str(named))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["evaluated"] == len(truths) - 1 and report["unlabelled"] == 1  # the unreviewed row
    assert report["image_accuracy"] >= 0.9


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_charset_reads_digit_captchas_with_the_general_model(repo_root, tmp_path, command):
    """general (0-9a-z) misreads these six digit captchas with letters; --charset=0123456789 reads them as the
    library does with that charset, most of them right."""
    import kcaptcha
    from tests.test_recognizer import general_misreads

    pictures, labels = general_misreads()
    for index, (label, picture) in enumerate(zip(labels, pictures)):
        picture.save(tmp_path / f"{label}_{index}.png")
    restricted = kcaptcha.load_model("general", charset="0123456789", tta=0).predict(pictures)
    right = sum(p.text == t for p, t in zip(restricted, labels))
    assert right >= 5
    free = run_bin(repo_root, command, "--model=general", "--tta=0", "--noprogress", str(tmp_path))
    digits = run_bin(repo_root, command, "--model=general", "--charset=0123456789", "--tta=0", "--noprogress",
                     str(tmp_path))
    assert free.returncode == 0 and digits.returncode == 0, free.stderr + digits.stderr
    if command == "predict":
        assert "accuracy: 0/6" in free.stderr and f"accuracy: {right}/6" in digits.stderr
    else:
        assert "whole-image accuracy: 0.0000" in free.stdout
        assert f"whole-image accuracy: {right / 6:.4f}" in digits.stdout
    one_error_line(run_bin(repo_root, command, "--model=general", "--charset=0123456789ABC", str(tmp_path)), 1,
                   "This model cannot read 'ABC'")


def test_predict_adds_the_answer_of_an_arithmetic_reading(repo_root, tmp_path):
    from kcaptcha.data.generate import CaptchaRenderer
    from kcaptcha.reading import arithmetic

    renderer = CaptchaRenderer(arithmetic.CHARSET, 5, 7, 160, 60, seed=20261207, style="arithmetic")
    for index in range(6):
        renderer.render(index)[1].save(tmp_path / f"{index}.png")
    result = run_bin(repo_root, "predict", "--model=arithmetic", "--noprogress", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert sum(text == renderer.label(int(os.path.basename(path)[0])) for path, text, _, _ in rows) >= 5
    for _, text, _, answer in rows:
        value, _ = arithmetic.answer(text)
        assert answer == ("" if value is None else str(value))
    as_json = run_bin(repo_root, "predict", "--model=arithmetic", "--format=json", "--charset=0123456789=?",
                      "--noprogress", str(tmp_path))
    for row in map(json.loads, as_json.stdout.splitlines()):  # digits only: never an expression
        assert row["answer"] is None and "is not an arithmetic expression" in row["answer_error"]
