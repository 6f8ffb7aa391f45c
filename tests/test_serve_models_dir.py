"""bin/serve --models_dir through its real server on loopback: folders dropped in, replaced under a stream of
requests, removed, broken or half-copied, and POST /b choosing the model by the image's size."""

import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from kcaptcha import files
from kcaptcha.export import saving
from kcaptcha.serve import create_app, server
from tests.test_serve import REPO_ROOT, SERVE, encoded, serving
from tests.test_serve_limits import HeldRecognizer, gray_png, post_in_background, running

POLL = "--poll_interval=0.2"
ALNUM = "0123456789abcdefghijklmnopqrstuvwxyz"


def captchas(charset, min_length, max_length, width, count=6):
    """(label, PNG bytes) of `count` captchas that the shipped model of that charset and size reads right."""
    from kcaptcha.data.generate import CaptchaRenderer

    renderer = CaptchaRenderer(charset, min_length, max_length, width, 60, seed=3)
    return [(label, encoded(image)) for label, image in (renderer.render(i) for i in range(count))]


@pytest.fixture(scope="module")
def alnum_captchas():
    return captchas(ALNUM, 4, 6, 160)  # 160x60: alnum's size; the digits model misreads every one


@pytest.fixture(scope="module")
def digit_captchas():
    return captchas("0123456789", 4, 4, 100)  # 100x60: digits' size


def copy_model(name, destination):
    shutil.copytree(os.path.join(saving.SHIPPED_MODELS_DIR, name), destination)


def wait_for(check, what, timeout=60.0):
    """Polls `check()` until it returns a true value (returned); fails naming `what` after `timeout` s."""
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.time() > deadline:
            pytest.fail(f"not seen within {timeout:g} s: {what}")
        time.sleep(0.1)


def folder_state(client, name):
    return client.get("/v1/models").json()["models_dir"]["folders"].get(name)


def served(client):
    return {m["name"]: m["metadata"]["name"] for m in client.get("/v1/models").json()["models"]}


def read_b(client, data):
    response = client.post("/b", files={"image_file": ("c.png", data)})
    assert response.status_code == 200, response.text
    return response.json()["value"]


def test_a_folder_dropped_in_is_served_without_a_restart_and_stops_when_removed(tmp_path, alnum_captchas,
                                                                                 digit_captchas):
    models = tmp_path / "models"
    copy_model("digits", models / "a-digits")
    with serving(tmp_path, f"--models_dir={models}", POLL) as running:
        client = running["client"]
        assert served(client) == {"a-digits": "digits"}
        label, alnum_png = alnum_captchas[0]
        assert read_b(client, alnum_png) != label  # only digits is served: it misreads letters

        copy_model("alnum", models / "b-alnum")  # a plain copy, seen while it is being written
        wait_for(lambda: "b-alnum" in served(client), "b-alnum served")
        assert folder_state(client, "b-alnum")["status"] == "served"
        # POST /b naming no model: the model of the image's size reads it; the default is a-digits
        assert [read_b(client, data) for _, data in alnum_captchas] == [label for label, _ in alnum_captchas]
        assert [read_b(client, data) for _, data in digit_captchas] == [label for label, _ in digit_captchas]

        shutil.rmtree(models / "b-alnum")
        wait_for(lambda: "b-alnum" not in served(client), "b-alnum no longer served")
        gone = client.post("/v1/models/b-alnum/predict", files={"file": ("c.png", alnum_png)})
        assert gone.status_code == 404 and gone.json()["error"] == "unknown_model"
        assert folder_state(client, "b-alnum") is None and running["process"].poll() is None
    log = running["log"].read_text()
    assert "Model b-alnum served from" in log and "Model b-alnum: its folder has gone" in log


def test_a_model_replaced_under_a_stream_of_requests_answers_every_one(tmp_path, alnum_captchas):
    models = tmp_path / "models"
    copy_model("digits", models / "m")
    with serving(tmp_path, f"--models_dir={models}", POLL, "--noaccess_log") as running:
        client, url = running["client"], running["url"]
        answers, stop = [], threading.Event()

        def stream(index):
            import httpx

            with httpx.Client(base_url=url, timeout=30) as own:
                while not stop.is_set():
                    label, data = alnum_captchas[index % len(alnum_captchas)]
                    sent = time.monotonic()
                    response = own.post("/v1/models/m/predict", files={"file": ("c.png", data)})
                    text = response.json()["predictions"][0]["text"] if response.status_code == 200 else None
                    answers.append((sent, response.status_code, text == label))
                    index += 1

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(answers) >= 20, "answers before the swap")

        def write(staging):  # what bin/train --overwrite does to a saved model folder
            shutil.copytree(os.path.join(saving.SHIPPED_MODELS_DIR, "alnum"), staging, dirs_exist_ok=True)

        files.replace_folder(str(models / "m"), write)
        wait_for(lambda: served(client).get("m") == "alnum", "m replaced by alnum")
        swapped = time.monotonic()
        wait_for(lambda: sum(1 for t, *_ in answers if t > swapped) >= 40, "answers after the swap")
        stop.set()
        for thread in threads:
            thread.join(60)
    statuses = [status for _, status, _ in answers]
    assert statuses.count(200) == len(statuses), f"failed requests: {[s for s in statuses if s != 200]}"
    before = [right for _, _, right in answers[:20]]
    after = [right for sent, _, right in answers if sent > swapped]  # sent once the listing named alnum
    assert not any(before) and len(after) >= 40 and all(after)  # digits misreads letters, alnum reads them


def test_a_request_already_on_a_replaced_model_is_answered_by_it():
    old, new = HeldRecognizer(), HeldRecognizer()
    app = create_app({"fake": old}, request_timeout=5)
    service = app.state.service
    with running(app) as (client, _):
        old_worker = service.models["fake"].batcher
        old.hold_decoding()  # the request has its model; its image is not yet in that model's queue
        waiting = post_in_background(client, 5)
        assert old.decoding.wait(10)
        service.install("fake", service.prepare("fake", new))  # (from this thread: the loop has nothing to do)
        old.release_decoding()
        assert waiting.result(30).status_code == 200 and waiting.result().json()["value"] == "5"
        assert client.post("/b", files={"image_file": ("c.png", gray_png(7))}).json()["value"] == "7"
        assert old.read[-1] == 5 and 7 not in old.read and new.read[-1] == 7
        old_worker._thread.join(10)  # stopped once its last request was answered
        assert not old_worker.alive and service.models["fake"].batcher.alive


def test_a_broken_or_half_copied_folder_never_replaces_the_served_one(tmp_path, digit_captchas):
    models = tmp_path / "models"
    copy_model("digits", models / "m")
    with serving(tmp_path, f"--models_dir={models}", POLL) as running:
        client = running["client"]
        label, data = digit_captchas[0]
        int8 = models / "m" / "model.int8.onnx"
        whole = int8.read_bytes()
        int8.write_bytes(whole[:len(whole) // 2])  # a copy that stalled halfway
        state = wait_for(lambda: (folder_state(client, "m") or {}).get("status") == "failed"
                         and folder_state(client, "m"), "m failed to load")
        assert "model.int8.onnx" in state["detail"] and state["served"] and state["model"] == "digits"
        response = client.post("/v1/models/m/predict", files={"file": ("c.png", data)})
        assert response.status_code == 200 and response.json()["predictions"][0]["text"] == label
        assert client.get("/readyz").status_code == 200

        (models / "half").mkdir()  # model files without their metadata
        shutil.copy(os.path.join(saving.SHIPPED_MODELS_DIR, "alnum", "model.onnx"), models / "half")
        half = wait_for(lambda: (folder_state(client, "half") or {}).get("status") == "failed"
                        and folder_state(client, "half"), "half reported")
        assert "metadata.json is missing" in half["detail"] and not half["served"]
        assert set(served(client)) == {"m"} and client.get("/readyz").json()["models_dir"]["folders"]["half"]

        copy_model("digits", models / ".keras-only")  # as bin/train saves: exported after it is saved
        metadata = files.read_json(str(models / ".keras-only" / "metadata.json"))
        files.atomic_write_json(str(models / ".keras-only" / "metadata.json"),
                                {key: value for key, value in metadata.items() if key != "export"})
        os.rename(models / ".keras-only", models / "keras-only")
        keras_only = wait_for(lambda: (folder_state(client, "keras-only") or {}).get("status") == "failed"
                              and folder_state(client, "keras-only"), "keras-only reported")
        assert "has no ONNX export to serve" in keras_only["detail"] and set(served(client)) == {"m"}
        with open(f"/proc/{running['process'].pid}/maps") as maps:
            assert "tensorflow" not in maps.read()  # the runtime serves without TensorFlow

        int8.write_bytes(whole)  # the copy completes: that version is served
        wait_for(lambda: (folder_state(client, "m") or {}).get("status") == "served", "m served again")
        assert read_b(client, data) == label
    log = running["log"].read_text()
    assert f"Model folder {models / 'm'} failed to load; the previous version stays served" in log
    assert "Traceback" not in log


def test_an_empty_folder_is_not_ready_until_a_model_arrives(tmp_path, digit_captchas):
    app = create_app({}, model_folder=server.model_folder(str(tmp_path), poll_interval=0.2))
    with running(app) as (client, _):
        label, data = digit_captchas[0]
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["reasons"] == ["no model is served yet"]
        waiting = client.post("/b", files={"image_file": ("c.png", data)})
        assert waiting.status_code == 503 and waiting.json()["error"] == "no_model" and waiting.headers["retry-after"]
        copy_model("digits", tmp_path / "d")
        wait_for(lambda: client.get("/readyz").status_code == 200, "ready once d is served")
        assert read_b(client, data) == label


def test_cli_names_a_missing_models_folder_and_a_review_page_without_a_model(tmp_path):
    def serve(*args):
        return subprocess.run([sys.executable, SERVE, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=180, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))

    missing = serve(f"--models_dir={tmp_path / 'nope'}")
    assert missing.returncode == 1 and f"Models folder not found: '{tmp_path / 'nope'}'" in missing.stderr
    review = serve(f"--models_dir={tmp_path}", f"--review_dir={tmp_path}")
    assert review.returncode == 2 and "--review_dir needs a model given with --models" in review.stderr
