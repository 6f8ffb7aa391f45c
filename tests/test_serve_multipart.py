"""Budgets that refuse a request while its body still arrives, before it takes a queue slot or a decoder: parts,
bytes per image and pixels, on a real uvicorn server on loopback with a model whose calls the test holds."""

import base64
import time

from kcaptcha.serve import create_app
from tests.test_serve import png_claiming
from tests.test_serve_limits import (MiB, HeldRecognizer, gray_png, post_in_background, read_answer, running,
                                     stalled_upload, wait_until)


def part(name: str, data: bytes, filename: str = "") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--q\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"


def refused_early(port: int, sent: bytes, declared: int = 8 * MiB):
    """Sends the headers of a `declared`-byte multipart body and `sent` of it, then stalls: the answer's status
    line and body, and the seconds it took."""
    started = time.monotonic()
    sock = stalled_upload(port, declared, sent)
    answer = read_answer(sock)
    sock.close()
    return answer.split(b"\r\n")[0], answer.split(b"\r\n\r\n", 1)[-1], time.monotonic() - started


def test_the_part_byte_and_pixel_budgets_refuse_a_body_before_it_has_arrived():
    fake = HeldRecognizer()
    app = create_app({"fake": fake}, max_image_bytes=MiB, max_request_bytes=16 * MiB, body_timeout=10,
                     access_log=False)
    with running(app) as (client, port):
        warm_up = list(fake.read)  # the batcher's first call, at start
        status, body, seconds = refused_early(port, b"".join(part(f"f{i}", b"v") for i in range(65)))
        assert b" 413 " in status and b"too_many_images" in body and seconds < 3

        status, body, seconds = refused_early(port, part("file", b"\0" * (MiB + 1), "big.png"))
        assert b" 413 " in status and b"too_large" in body and seconds < 3

        claims = part("file", png_claiming(3000, 3000), "a.png") * 2  # each within 4096^2, not both together
        status, body, seconds = refused_early(port, claims + b"--q\r\nContent-Disposition: form-data; name=")
        assert b" 413 " in status and b"too_many_pixels" in body and seconds < 3
        assert fake.decoded == [] and fake.read == warm_up  # nothing was decoded or read
        assert client.post("/b", files={"image_file": ("c.png", gray_png(5))}).json()["value"] == "5"


def test_a_request_that_will_be_refused_takes_no_queue_slot():
    """A full queue answers 503 only to requests it could serve: one over the pixel budget gets its 413."""
    fake = HeldRecognizer()
    with running(create_app({"fake": fake}, max_queue=2, max_wait_ms=0, access_log=False)) as (client, _):
        fake.hold()
        held = post_in_background(client, 1)
        wait_until(fake.busy.is_set)
        claims = [base64.b64encode(png_claiming(3000, 3000)).decode()] * 2
        as_json = client.post("/v1/models/fake/predict", json={"images": claims})
        as_files = client.post("/v1/models/fake/predict",
                               files=[("file", ("a.png", png_claiming(3000, 3000)))] * 2)
        full = client.post("/v1/models/fake/predict", files=[("file", ("a.png", gray_png(2)))] * 2)
        fake.release()
        assert held.result().json()["value"] == "1"
    assert (as_json.status_code, as_json.json()["error"]) == (413, "too_many_pixels")
    assert (as_files.status_code, as_files.json()["error"]) == (413, "too_many_pixels")
    assert (full.status_code, full.json()["error"]) == (503, "queue_full")  # the queue is full for the others
