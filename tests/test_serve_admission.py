"""Slow and idle connections against the request, body and connection budgets, on a real uvicorn server on
loopback: a client that stalls holds no request slot, the slowest body is cut when the body budget is full,
and past the connection budget the connection waiting longest is closed to make room."""

import socket
import time

from kcaptcha.serve import create_app
from tests.test_serve_limits import MiB, HeldRecognizer, app_metrics, gray_png, read_answer, running, stalled_upload


def normal_requests(client, count: int):
    """`count` normal `POST /b` requests one after another: their (status, value, seconds)."""
    answers = []
    for value in range(count):
        started = time.monotonic()
        response = client.post("/b", files={"image_file": ("c.png", gray_png(value))})
        answers.append((response.status_code, response.json().get("value"), time.monotonic() - started))
    return answers


def test_300_stalled_bodies_hold_no_request_slot_at_the_default_limits():
    """300 connections that send their headers (Content-Length: 50000) and stall: each normal request
    meanwhile is answered 200 at once, and none of them counts in progress."""
    fake = HeldRecognizer()
    with running(create_app({"fake": fake}, max_wait_ms=0, access_log=False)) as (client, port):
        stalled = [stalled_upload(port, 50000) for _ in range(300)]
        time.sleep(0.5)
        answers = normal_requests(client, 20)
        ready = client.get("/readyz").json()
        for sock in stalled:
            sock.close()
    assert [(status, value) for status, value, _ in answers] == [(200, str(v)) for v in range(20)]
    assert max(seconds for _, _, seconds in answers) < 1.0
    assert ready["requests_in_progress"] == 0 and ready["body_bytes_in_flight"] == 300 * 50000


def test_when_the_body_budget_is_full_the_slowest_body_is_cut_for_a_normal_request():
    fake = HeldRecognizer()
    app = create_app({"fake": fake}, max_image_bytes=MiB // 2, max_request_bytes=MiB, max_bytes_in_flight=4 * MiB,
                     max_wait_ms=0, access_log=False)
    with running(app) as (client, port):
        stalled = []
        for _ in range(4):  # 4 x (1 MiB - 1) declared: the whole budget
            stalled.append(stalled_upload(port, MiB - 1))
            time.sleep(0.05)
        time.sleep(0.3)
        young = client.post("/b", files={"image_file": ("c.png", gray_png(1))})
        assert young.status_code == 503  # none of them has been arriving long enough to be cut
        time.sleep(1.0)
        answers = normal_requests(client, 3)
        assert [(status, value) for status, value, _ in answers] == [(200, "0"), (200, "1"), (200, "2")]
        first = read_answer(stalled[0])  # the slowest (all sent as little; the oldest has the lowest rate)
        assert b" 408 " in first.split(b"\r\n")[0] and b"too_slow" in first
        assert client.get("/readyz").json()["body_bytes_in_flight"] < 4 * MiB
        for sock in stalled:
            sock.close()
    assert 'kcaptcha_rejected_total{reason="slow_body"} 1.0' in app_metrics(app)


def test_past_the_connection_budget_the_connection_waiting_longest_is_closed():
    fake = HeldRecognizer()
    with running(create_app({"fake": fake}, access_log=False), max_connections=8) as (client, port):
        silent = []
        for _ in range(8):
            silent.append(socket.create_connection(("127.0.0.1", port)))
            time.sleep(0.02)
        started = time.monotonic()
        assert client.get("/healthz").status_code == 200  # a ninth connection
        silent[0].settimeout(3)
        assert silent[0].recv(100) == b""  # the oldest, closed to make room, long before its header deadline
        assert time.monotonic() - started < 2
        silent[1].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # the others still work
        silent[1].settimeout(3)
        assert b" 200 " in silent[1].recv(1000).split(b"\r\n")[0]
        for sock in silent:
            sock.close()
