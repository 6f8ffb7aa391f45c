"""labels.csv: plain filename,label files, reviewed rows, atomic updates by concurrent writers."""

import multiprocessing
import os

import pytest

from kcaptcha.data import labels


def test_a_plain_csv_is_all_labels(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("\ufefffilename,label\n./a.png, 12 \nsub/../b.png,34\n\nsub/c d.png,56,extra\n", encoding="utf-8")
    assert labels.training_labels(str(path)) == {"a.png": "12", "b.png": "34", "sub/c d.png": "56"}
    path.write_text("a.png,12\n", encoding="utf-8")  # no header
    assert labels.training_labels(str(path)) == {"a.png": "12"}
    path.write_text("a.png,12\nonly_a_name\n", encoding="utf-8")
    with pytest.raises(ValueError, match="labels.csv, line 2: expected 'filename,label"):
        labels.read(str(path))
    with pytest.raises(FileNotFoundError, match="Labels CSV not found.*nothing.csv"):
        labels.read(str(tmp_path / "nothing.csv"))


def test_training_reads_only_what_a_person_reviewed(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("filename,label,confidence,status\n"
                    "a.png,1234,0.41,unreviewed\nb.png,5678,0.99,accepted\nc.png,9012,,corrected\n"
                    "d.png,,0.10,unreadable\ne.png,3456,0.50,skipped\n")
    assert labels.training_labels(str(path)) == {"b.png": "5678", "c.png": "9012"}
    path.write_text("filename,label,confidence,status\na.png,1,0.5,maybe\n")
    with pytest.raises(ValueError, match="line 2: status must be one of"):
        labels.read(str(path))


def _review(folder, names):
    for name in names:
        labels.update(folder, {name: {"label": name[:4], "status": "corrected"}})


def test_two_writers_at_once_lose_nothing(tmp_path):
    folder = str(tmp_path)
    labels.update(folder, {f"{i:04d}.png": {"label": "x", "confidence": 0.5} for i in range(40)})
    writers = [multiprocessing.get_context("spawn").Process(target=_review, args=(folder, [f"{i:04d}.png" for i in
                                                                                       range(k, 40, 2)]))
               for k in (0, 1)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    rows = labels.read(os.path.join(folder, labels.FILE))
    assert len(rows) == 40 and all(r.status == "corrected" and r.label == r.filename[:4] for r in rows)
    assert not [name for name in os.listdir(folder) if ".tmp" in name]
