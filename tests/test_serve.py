"""bin/serve through its real server on loopback: every endpoint, every bad input, batching, saving, the CLI.

Also the shared helpers of the other tests/test_serve_*.py files (limits and abuse, the browser).
"""

import base64
import concurrent.futures
import json
import contextlib
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from kcaptcha import serve
from kcaptcha.serve import uploads
import kcaptcha
from tests.ports import free_local_ports

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVE = os.path.join(REPO_ROOT, "bin", "serve")
CHROMIUM = "/usr/bin/chromium"
MiB = 1024 * 1024
MODEL = "digits"  # the shipped trained model: a wrong or swapped answer shows


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` pixels: a decompression bomb's shape."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def encoded(image: Image.Image, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def recognizer():
    """The served model, read in this process: the confidences the server must give."""
    from kcaptcha.reading.recognizer import load_model

    return load_model(MODEL)


def digit_captchas():
    """Eight digits captchas of the shipped model's size, as (true label, PNG bytes); all labels differ."""
    from kcaptcha.data.generate import CaptchaRenderer

    renderer = CaptchaRenderer("0123456789", 4, 4, 100, 60, seed=3)
    found = [renderer.render(index) for index in range(8)]
    assert len({label for label, _ in found}) == len(found)  # so that two swapped answers cannot both be right
    return [(label, encoded(image)) for label, image in found]


@pytest.fixture(scope="session")
def captchas():
    return digit_captchas()


@pytest.fixture(scope="session")
def samples(captchas):
    return [data for _, data in captchas]


@pytest.fixture(scope="session")
def labels(captchas):
    return [label for label, _ in captchas]


def post_concurrently(client, samples, count, path="/b"):
    """`count` requests to `path`, image `i % len(samples)` in the i-th, sent together from threads."""
    start = threading.Barrier(count)

    def post(index):
        start.wait(60)
        return client.post(path, files={"image_file": (f"{index}.png", samples[index % len(samples)])})

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(post, range(count)))


@contextlib.contextmanager
def serving(root, *args):
    """Runs `bin/serve *args` on a free port until it answers /readyz; stops it (SIGTERM) at the end."""
    port, log_path = free_local_ports(1)[0], root / "server.log"
    command = [sys.executable, SERVE, f"--port={port}", *args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        if process.poll() is not None:
            pytest.fail(f"bin/serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(base_url + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.time() > deadline:
            process.kill()
            pytest.fail(f"bin/serve was not ready after 180 s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.3)
    try:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            yield {"client": client, "url": base_url, "process": process, "log": log_path}
    except BaseException:  # a failed test leaves no server behind
        process.kill()
        process.wait(60)
        raise
    process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert process.wait(60) in (0, -signal.SIGTERM), log_path.read_text()[-3000:]
    assert "Application shutdown complete" in log_path.read_text()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`bin/serve` serving the shipped model as `digits` (its own name) and `second`, stopped at the end."""
    root = tmp_path_factory.mktemp("serve")
    with serving(root, f"--models={MODEL},second={MODEL}", f"--save_uploads={root / 'uploads'}",
                 "--max_wait_ms=25") as running:
        yield {**running, "uploads": root / "uploads"}


def test_several_worker_processes_answer_each_request_with_its_image(tmp_path, samples, labels):
    with serving(tmp_path, f"--models={MODEL}", "--workers=2", "--max_wait_ms=25", "--noaccess_log") as running:
        responses = post_concurrently(running["client"], samples, 16)
        assert [r.json()["value"] for r in responses] == [labels[i % 8] for i in range(16)]
        assert running["client"].get("/healthz").json()["status"] == "ok"
        with open(f"/proc/{running['process'].pid}/maps") as maps:  # the libraries the parent has loaded
            runtimes = {name for name in ("onnxruntime", "tensorflow") if name in maps.read()}
        assert not runtimes, f"the parent process loaded {runtimes}: it holds models it never uses"


def test_health_readiness_models_openapi_and_docs(server):
    client = server["client"]
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert set(ready.json()["models"]) == {"digits", "second"} and ready.json()["models"]["digits"]["worker_alive"]
    models = client.get("/v1/models").json()["models"]
    assert [(m["name"], m["default"]) for m in models] == [("digits", True), ("second", False)]
    assert models[0]["metadata"]["charset"] == "0123456789" and models[0]["metadata"]["width"] == 100
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/b", "/v1/models/{name}/predict", "/v1/models", "/healthz"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/models/{name}/predict"]["post"]["requestBody"]["content"]
    assert "image_file" in str(paths["/b"]["post"]["requestBody"])
    for page, script in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.offline.js")):
        html = client.get(page).text
        assert f'src="/docs-assets/{script}"' in html and "cdn." not in html and "fonts.googleapis" not in html
        asset = client.get(f"/docs-assets/{script}")
        assert asset.status_code == 200 and len(asset.content) > 100_000 and b"cdn.redoc.ly" not in asset.content


def test_upload_page_is_self_contained(server):
    page = server["client"].get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script>" in page.text and "http://" not in page.text and "https://" not in page.text


def test_parent_endpoint_answers_like_the_parent(server, samples, labels, recognizer):
    client = server["client"]
    # The parent's documented client: files={'image_file': ('captcha.jpg', BytesIO(bytes), 'application')}
    response = client.post("/b", files={"image_file": ("captcha.jpg", io.BytesIO(samples[0]), "application")})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"time", "value", "speed_time(ms)", "confidence"}
    assert body["value"] == labels[0]
    assert body["confidence"] == pytest.approx(recognizer.predict(samples[0]).confidence, rel=1e-3)
    assert body["time"].isdigit() and isinstance(body["speed_time(ms)"], int)
    other = client.post("/b", params={"model": "second"}, files={"image_file": ("c.png", samples[1])})
    assert other.json()["value"] == labels[1]


@pytest.mark.parametrize("request_kwargs", [
    {},
    {"files": {"image": ("c.png", b"x")}},  # another field name
    {"content": b'--q\r\nContent-Disposition: form-data; name="image_file"\r\n\r\nnot a file\r\n--q--\r\n',
     "headers": {"content-type": "multipart/form-data; boundary=q"}},  # a text field, not a file
], ids=["empty_body", "other_field", "text_field"])
def test_parent_endpoint_without_image_file_answers_1001(server, request_kwargs):
    response = server["client"].post("/b", **request_kwargs)
    assert response.status_code == 200 and response.json()["error_code"] == "1001"


def test_predict_reads_several_files_in_order(server, samples, labels, recognizer):
    files = [("file", (f"{i}.png", data, "image/png")) for i, data in enumerate(samples[:3])]
    response = server["client"].post("/v1/models/second/predict", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    expected = recognizer.predict(samples[:3])
    assert [p["text"] for p in body["predictions"]] == labels[:3]
    for got, want in zip(body["predictions"], expected):
        assert got["confidence"] == pytest.approx(want.confidence, rel=1e-3)
        assert got["char_confidences"] == pytest.approx(list(want.char_confidences), rel=1e-3)
    assert body["model"] == "second" and set(body["timing_ms"]) == {"decode", "model", "total"}


def test_predict_reads_base64_json_and_raw_bodies(server, samples, labels):
    client = server["client"]
    texts = labels[:2]
    encoded_images = [base64.b64encode(data).decode() for data in samples[:2]]
    body = client.post("/v1/models/digits/predict", json={"images": encoded_images}).json()
    assert [p["text"] for p in body["predictions"]] == texts
    data_url = client.post("/v1/models/digits/predict", json={"image": "data:image/png;base64," + encoded_images[1]})
    assert data_url.json()["predictions"][0]["text"] == texts[1]
    raw = client.post("/v1/models/digits/predict", content=samples[0], headers={"content-type": "image/png"})
    assert raw.json()["predictions"][0]["text"] == texts[0]


def test_media_types_are_case_insensitive(server, samples, labels):
    client = server["client"]
    body = b'--q\r\nContent-Disposition: form-data; name="image_file"; filename="c.png"\r\n\r\n' + samples[0] \
        + b"\r\n--q--\r\n"
    for path in ("/b", "/v1/models/digits/predict"):
        response = client.post(path, content=body, headers={"content-type": "Multipart/Form-Data; Boundary=q"})
        assert response.status_code == 200 and labels[0] in response.text, response.text
    as_json = client.post("/v1/models/digits/predict", headers={"content-type": "Application/JSON; charset=UTF-8"},
                          content=b'{"image": "' + base64.b64encode(samples[1]) + b'"}')
    assert as_json.json()["predictions"][0]["text"] == labels[1]
    raw = client.post("/v1/models/digits/predict", content=samples[2], headers={"content-type": "IMAGE/PNG"})
    assert raw.json()["predictions"][0]["text"] == labels[2]


def _chunks(total: int):
    for _ in range(total // MiB):
        yield b"\0" * MiB


MANY_TEXT_FIELDS = b"".join(b'--q\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i
                            for i in range(1000)) + b"--q--\r\n"
NOISE_PNG = encoded(Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 100), dtype=np.uint8)))
TRUNCATED = NOISE_PNG[:len(NOISE_PNG) // 2]
BAD_INPUTS = {
    # name: (path, request kwargs, status, error code)
    "not_an_image_b": ("/b", {"files": {"image_file": ("c.png", b"hello, not an image")}}, 400, "not_an_image"),
    "not_an_image": ("/v1/models/digits/predict", {"files": {"file": ("c.png", b"GIF89a nope")}}, 400, "not_an_image"),
    "truncated_b": ("/b", {"files": {"image_file": ("c.png", TRUNCATED)}}, 400, "corrupt_image"),
    "truncated": ("/v1/models/digits/predict", {"files": {"file": ("c.png", TRUNCATED)}}, 400, "corrupt_image"),
    "empty_file": ("/v1/models/digits/predict", {"files": {"file": ("c.png", b"")}}, 400, "empty_image"),
    "empty_body": ("/v1/models/digits/predict", {}, 400, "empty_body"),
    "missing_field": ("/v1/models/digits/predict",
                      {"content": b'--q\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--q--\r\n',
                       "headers": {"content-type": "multipart/form-data; boundary=q"}}, 422, "missing_field"),
    "json_without_images": ("/v1/models/digits/predict", {"json": {"pictures": []}}, 422, "missing_field"),
    "bad_base64": ("/v1/models/digits/predict", {"json": {"images": ["not base64!"]}}, 400, "bad_base64"),
    "bad_json": ("/v1/models/digits/predict", {"content": b"{", "headers": {"content-type": "application/json"}},
                 400, "bad_json"),
    "bad_multipart": ("/v1/models/digits/predict",
                      {"content": b"junk", "headers": {"content-type": "multipart/form-data; boundary=q"}},
                      400, "bad_multipart"),
    "unsupported_type": ("/v1/models/digits/predict", {"content": b"hi", "headers": {"content-type": "text/plain"}},
                         415, "unsupported_media_type"),
    "over_5mb_b": ("/b", {"files": {"image_file": ("c.png", b"\0" * (5 * MiB + 1))}}, 413, "too_large"),
    "over_5mb": ("/v1/models/digits/predict", {"files": {"file": ("c.png", b"\0" * (5 * MiB + 1))}}, 413, "too_large"),
    "over_body_limit_b": ("/b", {"files": {"image_file": ("c.png", b"\0" * (6 * MiB))}}, 413, "too_large"),
    "chunked_over_limit": ("/v1/models/digits/predict",
                           {"content": "CHUNKS", "headers": {"content-type": "image/png"}}, 413, "too_large"),
    "too_many_files": ("/v1/models/digits/predict", {"files": [("file", ("c.png", b"x"))] * 65}, 413,
                       "too_many_images"),
    "over_pixel_limit": ("/b", {"files": {"image_file": ("c.png", png_claiming(5000, 5000))}}, 413,
                         "too_many_pixels"),
    "pil_bomb_warning": ("/v1/models/digits/predict", {"files": {"file": ("c.png", png_claiming(10000, 10000))}},
                         413, "too_many_pixels"),
    "pil_bomb_error": ("/b", {"files": {"image_file": ("c.png", png_claiming(20000, 20000))}}, 413,
                       "too_many_pixels"),
    "over_request_pixels": ("/v1/models/digits/predict",  # each image within its limit, not both together
                            {"files": [("file", ("a.png", png_claiming(4000, 4000))),
                                       ("file", ("b.png", png_claiming(4000, 4000)))]}, 413, "too_many_pixels"),
    "deeply_nested_json": ("/v1/models/digits/predict", {"content": b"[" * 100_000,
                                                         "headers": {"content-type": "application/json"}},
                           400, "bad_json"),
    "json_huge_integer": ("/v1/models/digits/predict", {"content": b'{"images": ' + b"9" * 5000 + b"}",
                                                        "headers": {"content-type": "application/json"}},
                          400, "bad_json"),
    "json_not_utf8": ("/v1/models/digits/predict", {"content": b'{"images": ["\xff"]}',
                                                    "headers": {"content-type": "application/json"}}, 400, "bad_json"),
    "many_text_fields": ("/v1/models/digits/predict", {"content": "FIELDS", "headers": {
        "content-type": "multipart/form-data; boundary=q"}}, 413, "too_many_images"),
    "many_text_fields_b": ("/b", {"content": "FIELDS", "headers": {
        "content-type": "multipart/form-data; boundary=q"}}, 413, "too_many_images"),
    "too_many_json_images": ("/v1/models/digits/predict", {"json": {"images": ["AA=="] * 65}}, 413,
                             "too_many_images"),
    "unknown_model": ("/v1/models/nope/predict", {"files": {"file": ("c.png", b"x")}}, 404, "unknown_model"),
    "unknown_model_b": ("/b?model=nope", {"files": {"image_file": ("c.png", b"x")}}, 404, "unknown_model"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_clear_json_error_and_the_server_keeps_serving(server, samples, labels, case):
    path, kwargs, status, code = BAD_INPUTS[case]
    if kwargs.get("content") == "CHUNKS":  # no Content-Length: the limit must hold while streaming
        kwargs = dict(kwargs, content=_chunks(20 * MiB))
    if kwargs.get("content") == "FIELDS":  # text fields count toward the part limit as files do
        kwargs = dict(kwargs, content=MANY_TEXT_FIELDS)
    response = server["client"].post(path, **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code and response.json()["detail"]
    assert server["process"].poll() is None
    good = server["client"].post("/b", files={"image_file": ("c.png", samples[0])})
    assert good.status_code == 200 and good.json()["value"] == labels[0]


def test_concurrent_requests_are_batched_and_each_answered_with_its_image(server, samples, labels):
    before = server["client"].get("/readyz").json()["models"]["digits"]
    responses = post_concurrently(server["client"], samples, 32)  # 8 distinct images, 4 times each
    assert [r.json()["value"] for r in responses] == [labels[i % 8] for i in range(32)]
    after = server["client"].get("/readyz").json()["models"]["digits"]
    assert after["images"] - before["images"] == 32
    assert after["batches"] - before["batches"] < 32 and after["largest_batch"] > 1


def test_uploads_are_saved_under_their_reading_never_the_client_name(server, samples, labels):
    client = server["client"]
    jpeg = encoded(Image.open(io.BytesIO(samples[2])).convert("RGB"), "JPEG")
    body = client.post("/b", files={"image_file": ("../../evil.png", jpeg)}).json()
    assert body["value"] == labels[2]
    expected = server["uploads"] / "digits" / f"{labels[2]}_{body['time']}.jpg"
    deadline = time.time() + 20  # saving happens after the answer
    while not expected.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert expected.read_bytes() == jpeg
    assert not any(path.name.startswith("evil") for path in server["uploads"].parent.rglob("*"))


def test_save_upload_never_overwrites_and_converts_what_training_cannot_read(tmp_path):
    upload = uploads.Upload(b"png bytes", "x", image_format="PNG")
    paths = [uploads.save_upload(str(tmp_path), "12", upload, "100") for _ in range(3)]
    assert [os.path.basename(p) for p in paths] == ["12_100.png", "12_100-1.png", "12_100-2.png"]
    webp = uploads.Upload(encoded(Image.new("RGB", (8, 8), "red"), "WEBP"), "y", image_format="WEBP")
    path = uploads.save_upload(str(tmp_path), "a/b", webp, "7")
    assert os.path.basename(path) == "a-b_7.png" and Image.open(path).format == "PNG"


def test_each_request_logs_one_json_line_and_a_client_that_leaves_one_info_line(server, samples):
    client, log = server["client"], server["log"]
    client.post("/v1/models/second/predict?probe=access", files={"file": ("c.png", samples[0])})
    with socket.create_connection(("127.0.0.1", int(server["url"].rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"POST /b?probe=gone HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=q\r\n"
                     b"Content-Length: 100000\r\n\r\n--q\r\n")  # then hang up mid-body
    # Both requests' lines, in either order: the answered request's line can follow the other's (seen here).
    deadline = time.time() + 30
    text = log.read_text()
    while not all(probe in text for probe in ("probe=gone", "probe=access", "closed the connection")) \
            and time.time() < deadline:
        time.sleep(0.1)
        text = log.read_text()
    lines = text.splitlines()
    access = [json.loads(line) for line in lines if line.startswith("{") and '"probe=access"' in line]
    assert len(access) == 1 and access[0]["status"] == 200 and access[0]["model"] == "second"
    assert access[0]["path"] == "/v1/models/second/predict" and access[0]["images"] == 1 and access[0]["ms"] > 0
    gone = [line for line in lines if "closed the connection" in line]
    assert len(gone) == 1 and gone[0].startswith("INFO") and "/b" in gone[0], gone
    assert "Traceback" not in log.read_text() and "ClientDisconnect" not in log.read_text()


def test_model_names_must_be_unique_and_fit_in_a_url():
    with pytest.raises(ValueError, match="Two models are named 'digits'"):
        serve.load_recognizers([MODEL, MODEL])
    with pytest.raises(ValueError, match="fit in a URL path"):
        serve.load_recognizers([f"a/b={MODEL}"])


def test_served_models_run_on_the_backend_and_tta_asked_for(monkeypatch):
    assert serve.load_recognizers([MODEL])[MODEL].backend == "onnx (model.int8.onnx)"
    assert serve.load_recognizers([MODEL], backend="keras")[MODEL].backend == "keras"
    monkeypatch.setenv("KCAPTCHA_SERVE_OPTIONS", json.dumps({"models": [MODEL], "backend": "keras", "tta": 2}))
    worker = serve.app_from_environment()  # what each of bin/serve --workers=N processes builds
    assert worker.state.service.recognizers[MODEL].backend == "keras"
    assert worker.state.service.recognizers[MODEL].tta == 2 and serve.load_recognizers([MODEL])[MODEL].tta == 8


def test_cli_names_a_missing_model():
    result = subprocess.run([sys.executable, SERVE, "--models=/nonexistent/model", f"--port={free_local_ports(1)[0]}"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 1 and "Model folder not found: '/nonexistent/model'" in result.stderr


def test_served_sessions_leave_idle_cores_to_the_loop_while_the_library_spins():
    # bin/serve's event loop and decoders need the cores between batches; a library caller wants latency.
    served = serve.load_recognizers(["digits"])["digits"]
    library = kcaptcha.load_model("digits")
    assert served.backend == library.backend == "onnx (model.int8.onnx)"

    def spinning(recognizer):
        return recognizer.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")

    assert spinning(served) == "0" and spinning(library) == "1"
    assert served.predict(np.zeros((60, 100), np.float32)).text == library.predict(np.zeros((60, 100), np.float32)).text


def test_a_request_chooses_its_charset_and_a_bad_one_is_a_json_error(tmp_path):
    """general (0-9a-z) misreads these digit captchas with letters; a request's charset reads them as the library
    does with it, each request with its own in one batched model call, and the model's own charset for the others."""
    import kcaptcha
    from tests.test_recognizer import general_misreads

    pictures, labels = general_misreads()
    images = [encoded(picture) for picture in pictures]
    truths = [p.text for p in kcaptcha.load_model("general", charset="0123456789", tta=0).predict(pictures)]
    assert sum(text == label for text, label in zip(truths, labels)) >= 5
    with serving(tmp_path, "--models=general", "--tta=0", "--max_wait_ms=200", "--noaccess_log") as running:
        client = running["client"]
        as_json = {"images": [base64.b64encode(data).decode() for data in images]}
        free = client.post("/v1/models/general/predict", json=as_json).json()["predictions"]
        assert not any(p["text"].isdigit() for p in free)
        digits = client.post("/v1/models/general/predict", json={**as_json, "charset": "0123456789"}).json()
        assert [p["text"] for p in digits["predictions"]] == truths
        query = client.post("/v1/models/general/predict", params={"charset": "0123456789"},
                            files=[("file", (f"{i}.png", data)) for i, data in enumerate(images)])
        assert [p["text"] for p in query.json()["predictions"]] == truths
        with concurrent.futures.ThreadPoolExecutor(4) as pool:  # batched together, each read with its own
            answers = list(pool.map(lambda k: client.post("/b", params={"charset": "0123456789"} if k % 2 else {},
                                                          files={"image_file": ("c.png", images[0])}).json(), range(4)))
        assert [a["value"] for a in answers] == [free[0]["text"], truths[0]] * 2
        for bad, says in (({"charset": "0123ABC"}, "cannot read 'ABC'"), ({"charset": ""}, "non-empty string"),
                          ({"charset": ["0"]}, "non-empty string")):
            response = client.post("/v1/models/general/predict", json={**as_json, **bad})
            assert response.status_code == 422 and response.json()["error"] == "bad_charset", response.text
            assert says in response.json()["detail"]
        assert client.post("/b", params={"charset": "0x#"}, files={"image_file": ("c.png", images[0])}).status_code \
            == 422
    with serving(tmp_path, "--models=general", "--charset=0123456789", "--noaccess_log") as running:
        assert running["client"].post("/b", files={"image_file": ("c.png", images[0])}).json()["value"] == truths[0]


def test_arithmetic_readings_are_answered_with_their_value(tmp_path):
    """The shipped arithmetic model: each reading carries its answer, in /b and the predict API alike."""
    from kcaptcha.data.generate import CaptchaRenderer
    from kcaptcha.reading import arithmetic

    renderer = CaptchaRenderer(arithmetic.CHARSET, 5, 7, 160, 60, seed=20261207, style="arithmetic")
    drawn = [renderer.render(index) for index in range(8)]
    with serving(tmp_path, "--models=arithmetic", "--noaccess_log") as running:
        client = running["client"]
        files = [("file", (f"{i}.png", encoded(image))) for i, (_, image) in enumerate(drawn)]
        predictions = client.post("/v1/models/arithmetic/predict", files=files).json()["predictions"]
        assert sum(p["text"] == label for p, (label, _) in zip(predictions, drawn)) >= 7
        for p in predictions:
            assert (p["answer"], p["answer_error"]) == arithmetic.answer(p["text"]) and p["answer"] is not None
        parent = client.post("/b", files={"image_file": ("c.png", encoded(drawn[0][1]))}).json()
        assert parent["value"] == predictions[0]["text"] and parent["answer"] == predictions[0]["answer"]
        digits_only = client.post("/b", params={"charset": "0123456789"},  # no operator left: no answer
                                  files={"image_file": ("c.png", encoded(drawn[0][1]))}).json()
        assert digits_only["answer"] is None and "is not an arithmetic expression" in digits_only["answer_error"]
