"""bin/collect against a local captcha server that also answers badly: 404, 500, HTML, empty, slow, repeats."""

import collections
import http.server
import io
import itertools
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from kcaptcha.data import collect, labels
from kcaptcha.data.generate import CaptchaRenderer

# What the server answers, request after request: every bad kind once, then a repeat, between good images.
SCRIPT = ["image", "404", "image", "500", "html", "image", "empty", "slow", "image", "truncated", "repeat",
          "image", "image"]


class CaptchaServer(http.server.ThreadingHTTPServer):
    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.renderer = CaptchaRenderer("0123456789", 4, 4, 100, 60, seed=4)
        self.counter = itertools.count()
        self.images = itertools.count()
        self.last = b""
        self.served = []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/captcha"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        kind = SCRIPT[next(server.counter) % len(SCRIPT)]
        if kind in ("404", "500"):
            return self.send_error(int(kind))
        if kind == "slow":
            time.sleep(1.0)  # past the client's timeout
        if kind == "html":
            return self._send(b"<html>try again later</html>", "text/html")
        if kind == "empty":
            return self._send(b"", "image/png")
        if kind == "repeat":
            return self._send(server.last, "image/png")
        buffer = io.BytesIO()
        label, image = server.renderer.render(next(server.images))
        image.save(buffer, "PNG")
        data = buffer.getvalue()
        if kind == "truncated":
            return self._send(data[: len(data) // 2], "image/png")
        server.last = data
        server.served.append(label)
        self._send(data, "image/png")

    def _send(self, data, kind):
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    captchas = CaptchaServer()
    thread = threading.Thread(target=captchas.serve_forever, daemon=True)
    thread.start()
    yield captchas
    captchas.shutdown()


def test_bad_responses_are_skipped_and_an_interrupted_run_resumes_without_loss_or_repeats(server, tmp_path):
    import kcaptcha

    recognizer = kcaptcha.load_model("digits")
    folder = str(tmp_path / "collected")
    calls = {"n": 0}

    def interrupting_sleep(seconds):  # a Ctrl-C on the 8th pause
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        collect.collect(server.url, 6, folder, recognizer, interval=0, timeout=0.5, backoff=0.01,
                        sleep=interrupting_sleep)
    first = sorted(os.listdir(folder))
    summary = collect.collect(server.url, 6, folder, recognizer, interval=0, timeout=0.5, backoff=0.01,
                              sleep=lambda s: None)
    images = sorted(n for n in os.listdir(folder) if n.endswith(".png"))
    assert len(images) == 6 and set(first) - {"labels.csv", ".labels.lock", "labels.json"} <= set(images)
    assert labels.read_rules(folder).charset == "0123456789"  # what the review checks labels against
    rows = labels.read(os.path.join(folder, labels.FILE))
    assert sorted(r.filename for r in rows) == images  # every image labelled once, none twice
    assert all(r.status == "unreviewed" and 0 <= r.confidence <= 1 for r in rows)
    readings = {r.label for r in rows}
    assert len(readings & set(server.served)) >= 5  # the shipped model reads the served captchas right
    assert not [n for n in os.listdir(folder) if ".new-" in n or ".tmp" in n]
    assert summary["in_folder"] == 6


def test_every_bad_kind_is_counted(server, tmp_path):
    summary = collect.collect(server.url, 5, str(tmp_path), interval=0, timeout=0.5, backoff=0.01,
                              sleep=lambda s: None)
    assert summary["saved"] == 5 and summary["duplicates"] == 1
    for reason in ("http_404", "http_500", "not_an_image", "empty", "unreachable"):
        assert summary[f"rejected_{reason}"] >= 1, (reason, summary)


def test_a_dead_endpoint_fails_clearly(tmp_path, repo_root):
    result = subprocess.run([sys.executable, os.path.join(repo_root, "bin", "collect"), "--url=http://127.0.0.1:9/x",
                             f"--output_dir={tmp_path}", "--count=2", "--retries=2", "--interval=0", "--timeout=0.5"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr.splitlines()[-1].startswith("error: 2 failed requests in a row")
    bad = subprocess.run([sys.executable, os.path.join(repo_root, "bin", "collect"), "--url=ftp://x",
                          f"--output_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--url must be an http" in bad.stderr
    negative = subprocess.run([sys.executable, os.path.join(repo_root, "bin", "collect"), "--url=http://127.0.0.1:9/x",
                               f"--output_dir={tmp_path}", "--model=digits", "--tta=-1"],
                              capture_output=True, text=True, timeout=120)
    assert negative.returncode == 2 and "--tta=-1" in negative.stderr


def test_the_progress_line_comes_every_few_seconds_with_count_failures_and_rate():
    clock, out = [100.0], io.StringIO()
    line = collect.ProgressLine(10, stream=out, every=5.0, clock=lambda: clock[0])
    summary, streak = collections.Counter(), 0
    line(2, summary)  # the start
    for step in range(40):  # 0.25 s per request: 10 s in all, 4 images saved, 36 failed requests
        clock[0] += 0.25
        summary["requests"] += 1
        if step % 10 == 4:
            summary["saved"], streak = summary["saved"] + 1, 0
        else:
            summary["rejected_http_500" if step % 2 else "rejected_not_an_image"] += 1
            streak += 1
        line(2 + summary["saved"], summary, streak)
    summary["duplicates"] += 2
    clock[0] += 2.0
    line(10, summary)  # the end
    assert out.getvalue().splitlines() == [
        "collect: 2/10 images in the folder, 8 to fetch",
        "collect: 4/10 images (+2 in 5 s, 0.40/s, about 15 s left); 20 requests, 18 failed (10 http_500, "
        "8 not_an_image); 5 failed in a row, retrying",
        "collect: 6/10 images (+4 in 10 s, 0.40/s, about 10 s left); 40 requests, 36 failed (20 http_500, "
        "16 not_an_image); 5 failed in a row, retrying",
        "collect: 10/10 images (+8 in 12 s, 0.67/s); 40 requests, 36 failed (20 http_500, 16 not_an_image), "
        "2 duplicates"]


def test_bin_collect_shows_its_progress_in_a_log(server, tmp_path, repo_root):
    log = tmp_path / "collect.log"
    started = time.monotonic()
    with open(log, "w") as stderr:  # standard error to a file, as `bin/collect ... 2> collect.log`
        result = subprocess.run([sys.executable, os.path.join(repo_root, "bin", "collect"), f"--url={server.url}",
                                 f"--output_dir={tmp_path / 'collected'}", "--count=6", "--interval=0.1",
                                 "--timeout=0.5", "--progress_every=0.5"],
                                stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=120)
    seconds = time.monotonic() - started
    lines = log.read_text().splitlines()
    summary = json.loads(result.stdout)
    assert result.returncode == 0 and summary["in_folder"] == 6, log.read_text()
    assert lines[0] == "collect: 0/6 images in the folder, 6 to fetch"
    assert lines[-1].startswith("collect: 6/6 images (+6 in ") and "/s); " in lines[-1]
    assert f"{summary['requests']} requests" in lines[-1] and "1 http_500" in lines[-1], lines
    assert all(line.startswith("collect: ") for line in lines), lines
    assert 3 <= len(lines) <= seconds / 0.5 + 2 and len(lines) < summary["requests"], lines  # not one per request
    assert any("failed in a row, retrying" in line or "failed (" in line for line in lines[1:-1]), lines
