"""kcaptcha.data.folder: which images a folder holds and where each label comes from, in one place."""

import os

import pytest
from PIL import Image

from kcaptcha.data.folder import labelled_paths, LabelledFolder, LabelSource
from kcaptcha.reading.vocab import Vocab


def _images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    image = Image.new("L", (40, 20), 255)
    for name in names:
        image.save(folder / name)


def test_names_carry_the_labels_by_label_from(tmp_path):
    _images(tmp_path / "f", ["12_a.png", "34_b.png", "0001_56.png"])
    assert LabelledFolder.open(str(tmp_path / "f")).labelled()[1] == ["0001", "12", "34"]
    assert LabelledFolder.open(str(tmp_path / "f"), "suffix").labelled()[1] == ["56", "a", "b"]


def test_a_labels_csv_decides_and_an_image_it_lacks_is_unlabelled_not_named(tmp_path):
    folder = tmp_path / "f"
    _images(folder, ["12_a.png", "34_b.png", "56_c.png"])
    (folder / "labels.csv").write_text("filename,label,status\n12_a.png,99,accepted\n34_b.png,88,unreviewed\n")
    found = LabelledFolder.open(str(folder))
    assert found.labelled() == ([str(folder / "12_a.png")], ["99"])
    assert found.unlabelled() == [str(folder / "34_b.png"), str(folder / "56_c.png")]
    assert found.count == 1


def test_a_given_csv_labels_only_its_rows(tmp_path):
    folder = tmp_path / "raw"
    _images(folder, ["12_a.png", "34_b.png"])
    (tmp_path / "labels.csv").write_text("12_a.png,77\n")
    source = LabelSource.for_folder(str(folder), csv_path=str(tmp_path / "labels.csv"))
    assert source.label("12_a.png") == "77" and source.label("34_b.png") is None


def test_a_csv_naming_missing_images_is_an_error_naming_one(tmp_path):
    folder = tmp_path / "f"
    _images(folder, ["a.png"])
    (folder / "labels.csv").write_text("filename,label\na.png,12\ngone.png,34\n")
    with pytest.raises(FileNotFoundError, match="gone.png"):
        LabelledFolder.open(str(folder))


def test_a_bad_label_names_its_file(tmp_path):
    _images(tmp_path / "f", ["12_a.png", "1x_b.png"])
    with pytest.raises(ValueError, match="1x_b.png"):
        LabelledFolder.open(str(tmp_path / "f")).checked(Vocab("0123456789", 2, 2))


def test_the_hold_out_is_fixed_by_the_seed_and_disjoint(tmp_path):
    _images(tmp_path / "f", [f"{i:02d}_{i}.png" for i in range(50)])
    folder = LabelledFolder.open(str(tmp_path / "f"))
    (train, _), (val, _) = folder.holdout(seed=3)
    assert len(val) == 5 and not set(train) & set(val) and len(train) + len(val) == 50
    assert folder.holdout(seed=3)[1][0] == val and folder.holdout(seed=4)[1][0] != val


def test_evaluate_and_predict_read_labels_csv_too(tmp_path):
    folder = tmp_path / "f"
    _images(folder, ["x.png", "y.png"])
    (folder / "labels.csv").write_text("filename,label\nx.png,12\n")
    paths, labels = labelled_paths([str(folder), str(folder / "y.png")])
    assert labels == ["12", None, "y"] and paths[0] == os.path.join(str(folder), "x.png")
