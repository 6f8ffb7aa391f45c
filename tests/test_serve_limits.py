"""The service under abuse, on a real uvicorn server on loopback (in this process), with a model whose calls
the test holds: full queues, deadlines, clients that leave, stalled connections, bytes in flight, parsing
off the event loop, readiness, metrics, saving quotas. (The decoding and batching threads on their own:
tests/test_serve_workers.py.)"""

import concurrent.futures
import contextlib
import io
import logging
import socket
import threading
import time

import httpx
import numpy as np
import uvicorn
from PIL import Image

from kcaptcha.reading.recognizer import Prediction
from kcaptcha.serve import create_app
from kcaptcha.serve.server import ConnectionBudgetProtocol
from tests.ports import free_local_ports

MiB = 1024 * 1024


class HeldRecognizer:
    """Stands in for a `Recognizer`: each image reads as its top-left gray value; `hold()` makes model calls
    wait until `release()`, so tests can fill queues and pass deadlines at will."""

    name = "fake"
    metadata = {"charset": "0123456789"}

    def __init__(self, height: int = 2, width: int = 3, fail_on=None, slow_pixels: int = 0):
        self.height, self.width, self.fail_on, self.slow_pixels = height, width, fail_on, slow_pixels
        self.read, self.batch_sizes, self.decoded = [], [], []
        self._open, self.busy = threading.Event(), threading.Event()
        self._decoding_open, self.decoding = threading.Event(), threading.Event()
        self._open.set()
        self._decoding_open.set()

    def hold(self):
        self._open.clear()

    def release(self):
        self._open.set()

    def hold_decoding(self):
        """Makes `preprocess` (in the service's decoding thread) wait until `release_decoding()`."""
        self._decoding_open.clear()

    def release_decoding(self):
        self._decoding_open.set()

    def preprocess(self, image):
        self.decoding.set()
        assert self._decoding_open.wait(30)
        if self.slow_pixels and image.size[0] * image.size[1] >= self.slow_pixels:
            time.sleep(0.3)  # a heavy image
        value = image.convert("L").getpixel((0, 0))
        self.decoded.append(value)
        return np.full((self.height, self.width), float(value), np.float32)

    def predict_batch(self, batch, charsets=None):
        values = [int(v) for v in np.asarray(batch).reshape(len(batch), -1)[:, 0]]
        self.busy.set()
        assert self._open.wait(30)
        self.busy.clear()
        self.batch_sizes.append(len(batch))
        self.read.extend(values)
        if self.fail_on in values:
            raise RuntimeError("secret internal detail")
        return [Prediction(str(v), 1.0, (1.0,)) for v in values]


def gray_png(value: int, size=(3, 2)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, value).save(buffer, "PNG")
    return buffer.getvalue()


@contextlib.contextmanager
def running(app, header_timeout: float = 10.0, max_connections: int = 1024):
    """`app` on a real uvicorn server (with the service's header deadline and connection budget) in a thread,
    until the block ends."""
    saved = ConnectionBudgetProtocol.header_timeout, ConnectionBudgetProtocol.max_connections
    ConnectionBudgetProtocol.header_timeout, ConnectionBudgetProtocol.max_connections = header_timeout, max_connections
    port = free_local_ports(1)[0]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=ConnectionBudgetProtocol,
                                           log_config=None, access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started:
            assert time.time() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client, port
    finally:
        server.should_exit = True
        thread.join(30)
        ConnectionBudgetProtocol.header_timeout, ConnectionBudgetProtocol.max_connections = saved


BACKGROUND = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="test-client")


def post_in_background(client, value: int, path="/b"):
    """Starts `POST path` with gray image `value` in a thread; returns the future of its response."""
    return BACKGROUND.submit(client.post, path, files={"image_file": ("c.png", gray_png(value))})


def wait_until(condition, timeout=10.0):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_a_full_queue_is_answered_503_with_retry_after_and_makes_the_service_unready():
    fake = HeldRecognizer()
    with running(create_app({"fake": fake}, max_queue=2, max_wait_ms=0)) as (client, _):
        fake.hold()
        first = post_in_background(client, 1)
        wait_until(fake.busy.is_set)
        second = post_in_background(client, 2)
        wait_until(lambda: client.get("/readyz").json()["models"]["fake"]["queued"] == 2)
        full = client.post("/b", files={"image_file": ("c.png", gray_png(3))})
        assert full.status_code == 503 and full.json()["error"] == "queue_full"
        assert full.headers["retry-after"] == "1"
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "queue is full" in ready.json()["reasons"][0]
        assert client.get("/healthz").status_code == 200  # alive, only saturated
        fake.release()
        assert [first.result().json()["value"], second.result().json()["value"]] == ["1", "2"]
        assert client.get("/readyz").status_code == 200


def test_a_request_past_its_deadline_is_answered_503_and_its_waiting_work_dropped():
    fake = HeldRecognizer()
    with running(create_app({"fake": fake}, request_timeout=0.5, max_wait_ms=0)) as (client, _):
        fake.hold()
        first = post_in_background(client, 1)
        wait_until(fake.busy.is_set)  # image 1 is in the model; image 2 waits behind it
        second = post_in_background(client, 2)
        for response in (first.result(), second.result()):
            assert response.status_code == 503 and response.json()["error"] == "timeout"
            assert response.headers["retry-after"] == "1"
        fake.release()
        wait_until(lambda: client.get("/readyz").json()["models"]["fake"]["dropped"] == 1)
        assert 2 not in fake.read  # never read: its client had been answered
        assert client.post("/b", files={"image_file": ("c.png", gray_png(5))}).json()["value"] == "5"


def post_then_leave(client, port: int, value: int) -> None:
    """POSTs gray image `value` to /b over a raw socket behind one waiting request, and closes the connection
    once the service has counted both in the model's queue, without reading the answer."""
    body = (b'--q\r\nContent-Disposition: form-data; name="image_file"; filename="c.png"\r\n\r\n' + gray_png(value)
            + b"\r\n--q--\r\n")
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=q\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        wait_until(lambda: client.get("/readyz").json()["models"]["fake"]["queued"] == 2)


def test_work_for_a_client_that_left_is_skipped_and_not_saved(tmp_path, caplog):
    fake = HeldRecognizer()
    app = create_app({"fake": fake}, max_wait_ms=0, save_uploads=str(tmp_path))
    with running(app) as (client, port), caplog.at_level(logging.INFO, "kcaptcha.serve"):
        fake.hold()
        first = post_in_background(client, 1)
        wait_until(fake.busy.is_set)
        post_then_leave(client, port, 2)
        wait_until(lambda: "closed the connection" in caplog.text)
        fake.release()
        assert first.result().json()["value"] == "1"
        wait_until(lambda: client.get("/readyz").json()["models"]["fake"]["dropped"] == 1)
        wait_until(lambda: len(list(tmp_path.rglob("*.png"))) == 1)
    assert 2 not in fake.read
    assert [path.name.split("_")[0] for path in tmp_path.rglob("*.png")] == ["1"]  # only the answered request
    assert len([r for r in caplog.records if "closed the connection" in r.message]) == 1
    assert "kcaptcha_client_disconnects_total 1.0" in app_metrics(app)


def test_work_abandoned_before_it_was_decoded_is_dropped_unread(caplog):
    fake = HeldRecognizer()
    with running(create_app({"fake": fake}, max_wait_ms=0)) as (client, port), \
            caplog.at_level(logging.INFO, "kcaptcha.serve"):
        fake.hold_decoding()
        first = post_in_background(client, 1)
        wait_until(fake.decoding.is_set)  # image 1 holds the one decoding thread; image 2 waits behind it
        post_then_leave(client, port, 2)
        wait_until(lambda: "closed the connection" in caplog.text)
        fake.release_decoding()
        assert first.result().json()["value"] == "1"
        wait_until(lambda: client.get("/readyz").json()["models"]["fake"]["dropped"] == 1)
        assert client.get("/readyz").json()["models"]["fake"]["queued"] == 0
    assert fake.decoded == [1] and 2 not in fake.read


def app_metrics(app) -> str:
    return app.state.service.metrics.exposition().decode()


def test_saving_keeps_to_its_quota_and_skips_images_too_small_to_be_captchas(tmp_path, caplog):
    fake = HeldRecognizer(height=8, width=12)
    quota = 3 * len(gray_png(7))
    app = create_app({"fake": fake}, save_uploads=str(tmp_path), save_uploads_max_mb=quota / MiB)
    with running(app) as (client, _), caplog.at_level(logging.WARNING, "kcaptcha.serve"):
        tiny = client.post("/b", files={"image_file": ("c.png", gray_png(9, size=(1, 1)))})
        assert tiny.json()["value"] == "9"
        for value in range(5):
            assert client.post("/b", files={"image_file": ("c.png", gray_png(value))}).status_code == 200
        # saving runs after each answer is sent: wait for the refusal and for the last accepted file
        wait_until(lambda: "quota" in caplog.text and len(list(tmp_path.rglob("*.png"))) >= 3)
    saved = sorted(path.name.split("_")[0] for path in tmp_path.rglob("*.png"))
    assert saved == ["0", "1", "2"] and sum(p.stat().st_size for p in tmp_path.rglob("*.png")) <= quota
    assert caplog.text.count("Not saving uploads any more") == 1


def test_the_concurrency_limit_answers_503_but_health_readiness_and_metrics_still_answer():
    fake = HeldRecognizer()
    with running(create_app({"fake": fake}, max_concurrency=2, max_wait_ms=0)) as (client, _):
        fake.hold()
        held = [post_in_background(client, 1)]
        wait_until(fake.busy.is_set)
        held.append(post_in_background(client, 2))
        wait_until(lambda: client.get("/readyz").json()["requests_in_progress"] == 2)
        busy = client.post("/b", files={"image_file": ("c.png", gray_png(3))})
        assert busy.status_code == 503 and busy.json()["error"] == "busy" and busy.headers["retry-after"] == "1"
        assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200
        assert client.get("/readyz").status_code == 503
        fake.release()
        assert [r.result().status_code for r in held] == [200, 200]


def stalled_upload(port: int, declared: int, sent: bytes = b"--q\r\n") -> socket.socket:
    """A connection that declares a `declared`-byte body, sends `sent` of it and stalls."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /v1/models/fake/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                 b"boundary=q\r\nContent-Length: %d\r\n\r\n" % declared + sent)
    sock.settimeout(10)
    return sock


def read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_bodies_in_flight_are_capped_and_a_stalled_body_is_answered_408_and_closed():
    fake = HeldRecognizer()
    app = create_app({"fake": fake}, max_image_bytes=MiB, max_request_bytes=2 * MiB,
                     max_bytes_in_flight=4 * MiB, body_timeout=1.5)
    with running(app) as (client, port):
        started = time.monotonic()
        first = stalled_upload(port, 2 * MiB - 1)
        time.sleep(0.2)
        second = stalled_upload(port, 2 * MiB - 1)  # large bodies may hold 7/8 of 4 MiB: not two of 2 MiB
        answer = read_answer(second)
        assert b" 503 " in answer.split(b"\r\n")[0] and b"retry-after: 1" in answer.lower()
        assert time.monotonic() - started < 1.0  # turned away before its body, not at the deadline
        small = client.post("/b", files={"image_file": ("c.png", gray_png(4))})  # small bodies still fit
        assert small.json()["value"] == "4"
        answer = read_answer(first)  # closed by the server at the body deadline
        assert b" 408 " in answer.split(b"\r\n")[0] and b"body_timeout" in answer
        assert 1.4 < time.monotonic() - started < 5
        assert client.get("/readyz").json()["body_bytes_in_flight"] == 0
        for sock in (first, second):
            sock.close()


def test_connections_that_stall_before_their_headers_end_are_closed():
    fake = HeldRecognizer()
    with running(create_app({"fake": fake}), header_timeout=0.5) as (client, port):
        silent = socket.create_connection(("127.0.0.1", port))
        trickle = socket.create_connection(("127.0.0.1", port))
        trickle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        for sock in (silent, trickle):
            sock.settimeout(10)
            assert sock.recv(100) == b""  # closed by the server
            sock.close()
        assert 0.4 < time.monotonic() - started < 5
        for _ in range(3):  # a kept-alive client sending whole requests is not cut off
            assert client.get("/healthz").status_code == 200
            time.sleep(0.3)


def test_multipart_parsing_never_stalls_the_event_loop():
    fake = HeldRecognizer()
    fields = b"".join(b'--q\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(150_000))
    body = fields + b'--q\r\nContent-Disposition: form-data; name="file"; filename="c.png"\r\n\r\n' + gray_png(6) \
        + b"\r\n--q--\r\n"
    # A deadline far past the parse: what is measured is the event loop meanwhile, on cores however busy.
    with running(create_app({"fake": fake}, max_parts=10 ** 6, request_timeout=120)) as (client, _):
        started = time.monotonic()
        parse = BACKGROUND.submit(client.post, "/v1/models/fake/predict", content=body,
                                         headers={"content-type": "multipart/form-data; boundary=q"})
        slowest = 0.0
        while not parse.done():
            tick = time.monotonic()
            assert client.get("/healthz").status_code == 200
            slowest = max(slowest, time.monotonic() - tick)
        assert parse.result().json().get("predictions", [{}])[0].get("text") == "6", parse.result().text
        assert time.monotonic() - started > 0.5, "the parse was too quick to show anything"
        assert slowest < 0.25, f"/healthz waited {slowest:.2f} s while a body was parsed"


def test_an_internal_error_is_a_generic_500_and_is_counted(caplog):
    fake = HeldRecognizer(fail_on=7)
    app = create_app({"fake": fake})
    with running(app) as (client, _):
        response = client.post("/v1/models/fake/predict", files={"file": ("c.png", gray_png(7))})
        assert response.status_code == 500
        assert response.json() == {"error": "internal", "detail": "An internal error occurred; it has been logged"}
        assert client.post("/b", files={"image_file": ("c.png", gray_png(1))}).json()["value"] == "1"
    assert 'kcaptcha_requests_total{endpoint="/v1/models/{name}/predict",status="500"} 1.0' in app_metrics(app)


def test_metrics_count_requests_batches_and_queue_depth():
    fake = HeldRecognizer()
    app = create_app({"fake": fake}, max_wait_ms=0)
    with running(app) as (client, _):
        for value in range(3):
            client.post("/b", files={"image_file": ("c.png", gray_png(value))})
        client.post("/v1/models/nope/predict", files={"file": ("c.png", gray_png(1))})
        client.get("/nowhere")
        text = client.get("/metrics").text
    assert 'kcaptcha_requests_total{endpoint="/b",status="200"} 3.0' in text
    assert 'kcaptcha_requests_total{endpoint="/v1/models/{name}/predict",status="404"} 1.0' in text
    assert 'kcaptcha_requests_total{endpoint="other",status="404"} 1.0' in text
    assert 'kcaptcha_request_seconds_count{endpoint="/b"} 3.0' in text
    assert 'kcaptcha_batch_size_count{model="fake"} 3.0' in text  # warm-up calls are not counted
    assert 'kcaptcha_model_seconds_count{model="fake"} 3.0' in text
    assert 'kcaptcha_queue_depth{model="fake"} 0.0' in text


def test_readiness_fails_when_a_batching_worker_has_stopped():
    fake = HeldRecognizer()
    app = create_app({"fake": fake})
    with running(app) as (client, _):
        assert client.get("/readyz").status_code == 200
        app.state.service.batchers["fake"].close()
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["models"]["fake"]["worker_alive"] is False
        assert "batching worker has stopped" in ready.json()["reasons"][0]
