"""The review queue (`kcaptcha.serve.review`) and its routes on a real server; the page is in test_serve_browser."""

import json
import logging
import os
import re
import threading

import pytest

from kcaptcha import files
from kcaptcha.data import labels
from kcaptcha.serve import create_app
from kcaptcha.serve.review import BadLabel, Refused, ReviewQueue
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
    assert queue.next_item("ann")["item"]["filename"] == rows[0].filename  # each decision hands ann the next
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
    assert not [name for name in os.listdir(folder) if ".tmp" in name or ".new-" in name]
    with pytest.raises(KeyError):
        queue.decide("ann", "../outside.png", "accept", "1234")
    with pytest.raises(ValueError, match="needs a label"):
        queue.decide("ann", rows[4].filename, "accept", "  ")
    with pytest.raises(ValueError, match="action must be one of"):
        queue.decide("ann", rows[4].filename, "delete")


def test_two_reviewers_get_different_images_and_lose_no_decision(tmp_path):
    folder, rows = collected_folder(tmp_path, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    first, second = ReviewQueue(folder), ReviewQueue(folder)  # as two server processes (--workers=2)
    assert first.next_item("ann")["item"]["filename"] != second.next_item("bob")["item"]["filename"]
    assert second.next_item("ann")["item"]["filename"] == rows[0].filename  # ann keeps her image, in any process
    decided, errors = {"ann": [], "bob": []}, []

    def review(queues, reviewer):
        try:
            item = queues[0].next_item(reviewer)["item"]
            for turn in range(len(rows)):
                if item is None:
                    break
                decided[reviewer].append(item["filename"])
                item = queues[turn % 2].decide(reviewer, item["filename"], "accept", item["label"] + "x")["item"]
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=review, args=((first, second), "ann")),
               threading.Thread(target=review, args=((second, first), "bob"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(decided["ann"] + decided["bob"]) == sorted(row.filename for row in rows)  # none decided twice
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
        decision = {"reviewer": "ann", "filename": item["filename"], "action": "accept"}
        for label, message in BAD_LABELS.items():
            refused = client.post("/review/decision", json={**decision, "label": label})
            assert refused.status_code == 422 and refused.json()["error"] == "bad_label"
            assert message in refused.json()["detail"]
            if label == "ÄÖ€":  # says where the charset comes from
                assert f"({os.path.join(folder, 'labels.json')}, the digits model's)" in refused.json()["detail"]
        other = client.post("/review/decision", json={**decision, "reviewer": "bob", "label": "1234"})
        assert other.status_code == 409 and other.json()["error"] == "not_yours"
        assert "is handed to reviewer 'ann'" in other.json()["detail"]
        answer = client.post("/review/decision", json={**decision, "label": truth[item["filename"]]})
        assert answer.status_code == 200 and answer.json()["progress"]["by_status"]["accepted"] == 1
        again = client.post("/review/decision", json={**decision, "label": "0000"})
        assert again.status_code == 409 and again.json()["error"] == "decided"
        assert client.post("/review/decision", json={**decision, "label": "0000", "override": "yes"}).status_code == 422
        fixed = client.post("/review/decision", json={**decision, "action": "skip", "override": True})
        assert fixed.status_code == 200 and fixed.json()["progress"]["by_status"] == {
            "unreviewed": 2, "accepted": 0, "corrected": 0, "skipped": 1, "unreadable": 0}
        for body, status in ((b"[" * 10000, 400), (b"{" * 100000, 413)):  # deep; over the 16 KiB of a decision
            assert client.post("/review/decision", content=body,
                               headers={"content-type": "application/json"}).status_code == status
        assert client.post("/review/decision", json={"filename": item["filename"], "action": "rename"}).status_code == 422
        assert client.post("/review/decision", json={"filename": 5, "action": "skip"}).status_code == 422
        assert client.post("/review/decision", json={"filename": "nope.png", "action": "skip"}).status_code == 404
    rows = labels.read(os.path.join(folder, labels.FILE))
    assert [(row.filename, row.status) for row in rows if row.status != "unreviewed"] == [(item["filename"], "skipped")]


def test_without_review_dir_there_is_no_review_page(recognizer):
    with running(create_app({MODEL: recognizer}, access_log=False)) as (client, _):
        assert client.get("/review").status_code == 404


class Clock:
    """Seconds since the epoch that the test moves on."""

    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self):
        return self.now


def test_an_image_handed_to_another_reviewer_is_refused(tmp_path):
    folder, rows = collected_folder(tmp_path, [0.1, 0.2, 0.3])
    queue = ReviewQueue(folder)
    assert queue.next_item("ann")["item"]["filename"] == rows[0].filename
    with pytest.raises(Refused, match=f"'{rows[0].filename}' is handed to reviewer 'ann' for another 1[12][0-9] s") \
            as refused:
        queue.decide("bob", rows[0].filename, "accept", "9999")
    assert refused.value.code == "not_yours"
    with pytest.raises(Refused, match="was not handed to reviewer 'bob'"):  # one nobody was handed
        queue.decide("bob", rows[2].filename, "skip")
    assert [(row.label, row.status) for row in labels.read(os.path.join(folder, labels.FILE))] == [
        (row.label, "unreviewed") for row in rows]
    assert queue.next_item("bob")["item"]["filename"] == rows[1].filename
    queue.decide("ann", rows[0].filename, "accept", rows[0].label)
    assert ReviewQueue(folder).next_item("bob")["item"]["filename"] == rows[1].filename  # leases outlive a restart


def test_an_expired_lease_hands_the_image_on(tmp_path):
    folder, rows = collected_folder(tmp_path, [0.1, 0.2, 0.3])
    clock = Clock()
    queue = ReviewQueue(folder, claim_seconds=60, clock=clock)
    assert queue.next_item("ann")["item"]["filename"] == rows[0].filename
    clock.now += 59
    assert queue.next_item("bob")["item"]["filename"] == rows[1].filename  # ann's lease holds
    clock.now += 2
    assert queue.next_item("carol")["item"]["filename"] == rows[0].filename  # expired: handed on
    with pytest.raises(Refused, match=f"'{rows[0].filename}' is handed to reviewer 'carol' for another 60 s"):
        queue.decide("ann", rows[0].filename, "accept", "1111")
    queue.decide("carol", rows[0].filename, "accept", rows[0].label)
    clock.now += 3600
    queue.decide("bob", rows[1].filename, "skip")  # expired, but handed to nobody else: still bob's to decide
    assert [(row.label, row.status) for row in labels.read(os.path.join(folder, labels.FILE))] == [
        (rows[0].label, "accepted"), (rows[1].label, "skipped"), (rows[2].label, "unreviewed")]


def test_an_override_decides_any_image_and_is_logged(tmp_path, caplog):
    folder, rows = collected_folder(tmp_path, [0.1, 0.2])
    queue = ReviewQueue(folder)
    queue.next_item("ann")
    with caplog.at_level(logging.WARNING, logger="kcaptcha.serve"):
        queue.decide("lead", rows[0].filename, "accept", "1234", override=True)
    logged = [json.loads(r.getMessage().split("Review override: ", 1)[1]) for r in caplog.records
              if "Review override" in r.getMessage()]
    assert logged == [{"folder": folder, "filename": rows[0].filename, "reviewer": "lead", "action": "accept",
                       "before": {"label": rows[0].label, "status": "unreviewed"},
                       "after": {"label": "1234", "status": "corrected"}, "leased_to": "ann"}]
    with pytest.raises(Refused, match="was decided already \\(corrected, label '1234'\\)") as refused:
        queue.decide("ann", rows[0].filename, "accept", rows[0].label)  # ann's image, decided meanwhile
    assert refused.value.code == "decided"


def test_a_decided_row_changes_only_by_override(tmp_path):
    folder, rows = collected_folder(tmp_path, [0.1, 0.2])
    queue = ReviewQueue(folder)
    queue.next_item("ann")
    queue.decide("ann", rows[0].filename, "accept", "1234")
    for action, label in (("accept", "5678"), ("skip", ""), ("unreadable", "")):
        with pytest.raises(Refused, match="a decided image changes only with \"override\": true"):
            queue.decide("ann", rows[0].filename, action, label)
    assert labels.read(os.path.join(folder, labels.FILE))[0] == labels.Row(rows[0].filename, "1234", 0.1, "corrected")
    queue.decide("ann", rows[0].filename, "unreadable", override=True)
    assert labels.read(os.path.join(folder, labels.FILE))[0].status == "unreadable"


BAD_LABELS = {"ÄÖ€": "characters 'ÄÖ€' are not in the charset '0123456789'", "ab c": "it holds a space",
              "1,2\n3": "it holds a line break"}


def test_labels_are_checked_against_the_folder_charset_and_lengths(tmp_path, recognizer):
    folder, truth = uploads_folder(tmp_path, count=3)
    queue = ReviewQueue(folder, recognizer)  # reads the folder: the digits model's rules, in labels.json
    assert labels.read_rules(folder) == labels.LabelRules("0123456789", 4, 4, labels.read_rules(folder).source,
                                                          "digits")
    assert queue.next_item("ann")["labels"] == {"charset": "0123456789", "min_length": 4, "max_length": 4,
                                                "source": os.path.join(folder, "labels.json") + ", the digits model's"}
    item = queue.next_item("ann")["item"]
    for label, message in {**BAD_LABELS, "123": "length 3 is not the allowed 4", "12345": "length 5"}.items():
        with pytest.raises(BadLabel, match=f"The label .* cannot be saved: {re.escape(message)}"):
            queue.decide("ann", item["filename"], "accept", label)
    assert all(row.status == "unreviewed" for row in labels.read(os.path.join(folder, labels.FILE)))
    queue.decide("ann", item["filename"], "accept", truth[item["filename"]])

    given = ReviewQueue(folder, charset="0123456789abc", max_length=5)  # flags beat labels.json
    assert given.rules.check("abc12") == "" and "length 2 is not the allowed 4-5" in given.rules.check("ab")
    (tmp_path / "plain").mkdir()
    plain = ReviewQueue(str(tmp_path / "plain"))  # no model, no labels.json: any one word
    assert plain.rules.check("ÄÖ€") == "" and "a space" in plain.rules.check("ab c")
    (tmp_path / "uploads" / "digits" / "labels.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="labels.json is not a label rules file"):
        ReviewQueue(folder)


def test_bad_review_rules_are_a_usage_error(tmp_path, repo_root):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, os.path.join(repo_root, "bin", "serve"), f"--review_dir={tmp_path}",
                             "--review_min_length=5", "--review_max_length=4"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: Label lengths must satisfy 1 <= min_length "
                                                               "<= max_length. Received: min_length=5, max_length=4")
