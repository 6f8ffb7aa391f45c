"""The review queue (`kcaptcha.serve.review`) and its routes on a real server; the page is in test_serve_browser."""

import os
import threading

import pytest

from kcaptcha import files
from kcaptcha.data import labels
from kcaptcha.serve import create_app
from kcaptcha.serve.review import ReviewQueue
from tests.test_serve import MODEL, digit_captchas
from tests.test_serve_limits import running


@pytest.fixture(scope="module")
def recognizer():
    from kcaptcha.reading.recognizer import load_model

    return load_model(MODEL)


def uploads_folder(tmp_path, count=5):
    """A `--save_uploads`-like folder: `<label>_<time>.png` files, no labels.csv; and {name: true label}."""
    folder = tmp_path / "uploads" / "digits"
    folder.mkdir(parents=True)
    truth = {}
    for index, (label, data) in enumerate(digit_captchas()[:count]):
        name = f"{label}_{1000 + index}.png"
        (folder / name).write_bytes(data)
        truth[name] = label
    return str(folder), truth


def collected_folder(tmp_path, confidences):
    """A `bin/collect`-like folder: images named by hash, read by a model (`confidences`) in labels.csv."""
    folder = tmp_path / "collected"
    folder.mkdir()
    rows = []
    for (label, data), confidence in zip(digit_captchas(), confidences):
        name = f"{abs(hash(data)) % 10 ** 12:012d}.png"
        (folder / name).write_bytes(data)
        rows.append(labels.Row(name, label, confidence, "unreviewed"))
    labels.write(str(folder / labels.FILE), rows)
    return str(folder), rows


def hashes(folder):
    return {path: files.sha256(path) for path in files.list_images(folder)}


def test_least_sure_first_and_progress(tmp_path):
    folder, rows = collected_folder(tmp_path, [0.9, 0.2, 0.99, 0.5])
    queue = ReviewQueue(folder)
    assert [row.confidence for row in queue.order()] == [0.2, 0.5, 0.9, 0.99]
    answer = queue.next_item("ann")
    assert answer["item"]["filename"] == rows[1].filename and answer["item"]["label"] == rows[1].label
    assert answer["progress"] == {"total": 4, "left": 4, "by_status": {
        "unreviewed": 4, "accepted": 0, "corrected": 0, "skipped": 0, "unreadable": 0}}


def test_an_uploads_folder_is_read_once_by_the_model(tmp_path, recognizer):
    folder, truth = uploads_folder(tmp_path)
    (tmp_path / "uploads" / "digits" / "broken.png").write_bytes(b"not an image")
    before = hashes(folder)
    queue = ReviewQueue(folder, recognizer)
    written = {row.filename: row for row in labels.read(os.path.join(folder, labels.FILE))}
    assert set(written) == set(truth)  # the damaged file has no reading to write
    assert all(written[name].label == label and 0 < written[name].confidence <= 1 for name, label in truth.items())
    assert all(row.status == "unreviewed" for row in written.values())
    assert queue.next_item("ann")["item"] == {"filename": "broken.png", "label": "", "confidence": None,
                                              "status": "unreviewed"}  # no reading: shown first
    assert hashes(folder) == before  # nothing renamed, changed or deleted


def test_decisions_are_written_at_once_and_nothing_else_changes(tmp_path):
    folder, rows = collected_folder(tmp_path, [0.1, 0.2, 0.3, 0.4, 0.5])
    before = hashes(folder)
    queue = ReviewQueue(folder)
    queue.decide("ann", rows[0].filename, "accept", rows[0].label)
    queue.decide("ann", rows[1].filename, "accept", f" {rows[1].label[::-1]} ")
    queue.decide("ann", rows[2].filename, "skip")
    answer = queue.decide("ann", rows[3].filename, "unreadable", "ignored")
    written = labels.read(os.path.join(folder, labels.FILE))
    assert [(row.label, row.status) for row in written] == [
        (rows[0].label, "accepted"), (rows[1].label[::-1], "corrected"), (rows[2].label, "skipped"),
        (rows[3].label, "unreadable"), (rows[4].label, "unreviewed")]
    assert answer["item"]["filename"] == rows[4].filename and answer["progress"]["left"] == 1
    assert labels.training_labels(os.path.join(folder, labels.FILE)) == {
        rows[0].filename: rows[0].label, rows[1].filename: rows[1].label[::-1]}
    assert hashes(folder) == before
    with pytest.raises(KeyError):
        queue.decide("ann", "../outside.png", "accept", "1234")
    with pytest.raises(ValueError, match="needs a label"):
        queue.decide("ann", rows[4].filename, "accept", "  ")
    with pytest.raises(ValueError, match="action must be one of"):
        queue.decide("ann", rows[4].filename, "delete")


def test_two_reviewers_get_different_images_and_lose_no_decision(tmp_path):
    folder, rows = collected_folder(tmp_path, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    first, second = ReviewQueue(folder), ReviewQueue(folder)  # as two server processes
    shared = ReviewQueue(folder)
    assert shared.next_item("ann")["item"]["filename"] != shared.next_item("bob")["item"]["filename"]
    assert shared.next_item("ann")["item"]["filename"] == rows[0].filename  # ann keeps her image
    errors = []

    def review(queue, reviewer, chosen):
        try:
            for row in chosen:
                queue.decide(reviewer, row.filename, "accept", row.label + "x")
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=review, args=(first, "ann", rows[0::2])),
               threading.Thread(target=review, args=(second, "bob", rows[1::2]))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    written = labels.read(os.path.join(folder, labels.FILE))
    assert [(row.label, row.status) for row in written] == [(row.label + "x", "corrected") for row in rows]


def test_a_claim_lapses(tmp_path):
    folder, rows = collected_folder(tmp_path, [0.1, 0.2])
    queue = ReviewQueue(folder, claim_seconds=0.0)
    assert queue.next_item("ann")["item"]["filename"] == queue.next_item("bob")["item"]["filename"]


def test_review_routes(tmp_path, recognizer):
    folder, truth = uploads_folder(tmp_path, count=3)
    (tmp_path / "secret.png").write_bytes(b"outside the folder")
    with running(create_app({MODEL: recognizer}, review_dir=folder, access_log=False)) as (client, _):
        page = client.get("/review")
        assert page.status_code == 200 and "review labels" in page.text
        item = client.get("/review/next", params={"reviewer": "ann"}).json()["item"]
        image = client.get("/review/image", params={"name": item["filename"]})
        assert image.status_code == 200 and image.content == open(os.path.join(folder, item["filename"]), "rb").read()
        for name in ("../secret.png", "../../uploads/digits/" + item["filename"], "/etc/passwd"):
            assert client.get("/review/image", params={"name": name}).status_code == 404
        answer = client.post("/review/decision", json={"reviewer": "ann", "filename": item["filename"],
                                                       "action": "accept", "label": truth[item["filename"]]})
        assert answer.status_code == 200 and answer.json()["progress"]["by_status"]["accepted"] == 1
        for body, status in ((b"[" * 10000, 400), (b"{" * 100000, 413)):  # deep; over the 16 KiB of a decision
            assert client.post("/review/decision", content=body,
                               headers={"content-type": "application/json"}).status_code == status
        assert client.post("/review/decision", json={"filename": item["filename"], "action": "rename"}).status_code == 422
        assert client.post("/review/decision", json={"filename": 5, "action": "skip"}).status_code == 422
        assert client.post("/review/decision", json={"filename": "nope.png", "action": "skip"}).status_code == 404
    rows = labels.read(os.path.join(folder, labels.FILE))
    assert [(row.filename, row.status) for row in rows if row.status != "unreviewed"] == [(item["filename"], "accepted")]


def test_without_review_dir_there_is_no_review_page(recognizer):
    with running(create_app({MODEL: recognizer}, access_log=False)) as (client, _):
        assert client.get("/review").status_code == 404
