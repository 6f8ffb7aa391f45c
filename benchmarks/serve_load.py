"""python benchmarks/serve_load.py --model=digits [--clients=32] [--requests=10000]
python benchmarks/serve_load.py --abuse [--before_repo=DIR] [--abuse_cases=heavy,stalled,...]
python benchmarks/serve_load.py --abuse --before_repo=DIR --abuse_cases=none,stalled_bodies,heavy8,heavy16,parts \
    --abuse_workers=2,1 --abuse_seconds=10

Load test on loopback: `--clients` concurrent keep-alive clients POST generated captchas to `/b` until
`--requests` have been answered, first against a parent-style baseline (a threaded Flask server, each
request one `Recognizer.predict` call on one image, same model), then against `bin/serve`. Reports
requests/s, p50/p99 latency and errors for both, and checks the targets: at least 3x the baseline's
throughput, p99 under 100 ms, zero errors. `--check` makes a missed target exit 1.

With --abuse, runs instead abusive cases against fresh `bin/serve` servers, each case for this checkout
and, with --before_repo, for another checkout (another version to compare), and prints the table of
both side by side (measured in one run, so a busy machine weighs on both alike): heavy requests (64
images of 4096x4096) and normal /b latency meanwhile, abandoned requests, 64 stalled 16 MB uploads and
64 stalled headers (memory, closing), 310,000 text fields (/healthz meanwhile), deep JSON, capitalised
media types, clients hanging up (log lines), the docs' external URLs, saving (quota, 1x1 images),
10,000 requests with 10% malformed, oversized or abandoned, and the parent's memory with --workers=2.
The rows `none`, `stalled_bodies` (300 connections send headers, then stall), `heavy8`/`heavy16` (that many
connections send 64 PNGs of 4096x4096 again and again) and `parts` (4 connections send 300,000 tiny parts)
time normal /b requests during the abuse (sent from another process) and read the memory of all the server's
processes before, at its peak and after, at each of --abuse_workers.

Flask is a benchmark-only dependency: `pip install flask`.
"""

import asyncio
import io
import json
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
from absl import app, flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
from tests.ports import free_local_ports  # noqa: E402

flags.DEFINE_string("model", "digits", "Model name or folder, served by both servers.")
flags.DEFINE_integer("clients", 32, "Concurrent clients.", lower_bound=1)
flags.DEFINE_integer("requests", 10000, "Requests to time, per server.", lower_bound=1)
flags.DEFINE_integer("warmup", 200, "Untimed requests sent first, per server.", lower_bound=0)
flags.DEFINE_enum("servers", "both", ["both", "serve", "baseline"], "Which servers to load.")
flags.DEFINE_float("max_wait_ms", 2.0, "bin/serve's --max_wait_ms.")
flags.DEFINE_integer("max_batch_size", 64, "bin/serve's --max_batch_size.")
flags.DEFINE_integer("workers", 1, "bin/serve's --workers (server processes).")
flags.DEFINE_bool("check", False, "Exit 1 when a target is missed.")
flags.DEFINE_string("json_out", None, "Also write the results to this JSON file.")
flags.DEFINE_integer("baseline_server", None, "Internal: run the Flask baseline on this port.")
flags.DEFINE_bool("abuse", False, "Run the abusive cases instead of the load test.")
flags.DEFINE_list("abuse_cases", ["heavy", "abandoned", "stalled", "parsing", "errors", "saving", "mixed", "workers"],
                  "Which abusive cases to run.")
flags.DEFINE_list("abuse_workers", ["1", "2"], "With --abuse: the --workers values the rows (none, stalled_bodies, "
                  "heavy8, heavy16, parts) are measured at.")
flags.DEFINE_float("abuse_seconds", 12.0, "With --abuse: how long each row's abuse lasts.", lower_bound=2.0)
flags.DEFINE_string("before_repo", None, "With --abuse: another checkout to compare (e.g. `git worktree add` or "
                    "`git archive HEAD | tar -x -C DIR`), measured side by side with this one.")
flags.DEFINE_string("work_dir", "/tmp/kcaptcha_serve_load", "With --abuse: where server logs and uploads go.")
FLAGS = flags.FLAGS

SPEEDUP_TARGET, P99_TARGET_MS = 3.0, 100.0


def run_baseline_server(model: str, port: int) -> None:
    """The parent's design: Flask, one thread per connection, one `predict` call per request."""
    import logging

    from flask import Flask, jsonify, request
    from werkzeug.serving import WSGIRequestHandler

    from kcaptcha.reading.recognizer import load_model

    recognizer = load_model(model)
    flask_app = Flask("baseline")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log, as bin/serve --noaccess_log

    @flask_app.route("/healthz")
    def healthz():
        return {"status": "ok"}

    @flask_app.route("/b", methods=["POST"])
    def parent_predict():
        upload = request.files.get("image_file")
        if not upload:
            return jsonify({"error_code": "1001"})
        start = time.time()
        prediction = recognizer.predict(upload.read())
        return jsonify({"time": str(time.time()).replace(".", ""), "value": prediction.text,
                        "speed_time(ms)": int((time.time() - start) * 1000), "confidence": prediction.confidence})

    WSGIRequestHandler.protocol_version = "HTTP/1.1"  # keep-alive, as the load clients use
    flask_app.run(host="127.0.0.1", port=port, threaded=True)


def post(path: str, body: bytes, content_type: str, extra_headers: str = "") -> bytes:
    """A ready-to-send HTTP/1.1 POST request."""
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{extra_headers}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def multipart(parts, boundary: str = "kcaptchaload") -> bytes:
    """A multipart/form-data body of (field name, file name or None for a text field, data) parts."""
    chunks = []
    for field, filename, data in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(chunks) + f"--{boundary}--\r\n".encode()


def captcha_pngs(model: str, count: int = 64):
    """`count` PNG captchas of `model`'s task, in the look it was trained on (so that a model with a float32
    fallback reads the share of them twice that it would in use)."""
    from kcaptcha.export import saving
    from kcaptcha.data.generate import CaptchaRenderer

    renderer = CaptchaRenderer.from_metadata(saving.read_metadata(saving.resolve_model_dir(model)), 20240601)
    pngs = []
    for index in range(count):
        buffer = io.BytesIO()
        renderer.render(index)[1].save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    return pngs


def captcha_requests(model: str, count: int = 64):
    """`count` ready-to-send multipart POST /b requests with captchas sized for `model`."""
    return [post("/b", multipart([("image_file", "c.png", png)], f"kcaptchaload{index}"),
                 f"multipart/form-data; boundary=kcaptchaload{index}")
            for index, png in enumerate(captcha_pngs(model, count))]


async def _exchange(reader, writer, payload: bytes):
    """Sends one request; returns (status, body, keep_alive)."""
    writer.write(payload)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    keep_alive = headers.get("connection", "").lower() != "close" and lines[0].startswith("HTTP/1.1")
    return status, body, keep_alive


async def load(port: int, payloads, clients: int, total: int):
    """`clients` connections send `total` requests between them; returns (latencies in s, errors, seconds)."""
    latencies, errors, issued = [], [], 0

    async def client():
        nonlocal issued
        connection = None
        while issued < total:
            payload = payloads[issued % len(payloads)]
            issued += 1
            start = time.perf_counter()
            try:
                if connection is None:
                    connection = await asyncio.open_connection("127.0.0.1", port)
                status, body, keep_alive = await _exchange(*connection, payload)
                if status != 200 or b'"value"' not in body:
                    errors.append(f"HTTP {status}: {body[:200]!r}")
            except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                errors.append(repr(error))
                keep_alive = False
            latencies.append(time.perf_counter() - start)
            if not keep_alive and connection is not None:
                connection[1].close()
                connection = None
        if connection is not None:
            connection[1].close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return np.array(latencies), errors, time.perf_counter() - started


def wait_ready(port: int, process, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"The server exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"The server on port {port} was not ready after {timeout:.0f} s")


def measure(name: str, command, port: int, payloads) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_ready(port, process)
        if FLAGS.warmup:
            asyncio.run(load(port, payloads, FLAGS.clients, FLAGS.warmup))
        latencies, errors, seconds = asyncio.run(load(port, payloads, FLAGS.clients, FLAGS.requests))
    except RuntimeError:
        process.kill()
        print(process.communicate()[1].decode(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    result = {"server": name, "requests": len(latencies), "errors": len(errors), "seconds": round(seconds, 3),
              "requests_per_s": round(len(latencies) / seconds, 1),
              "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2),
              "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 2),
              "max_ms": round(float(latencies.max()) * 1000, 2), "first_errors": errors[:3]}
    print(f"{name:>9}: {result['requests_per_s']:8.1f} req/s  p50 {result['p50_ms']:7.2f} ms  "
          f"p99 {result['p99_ms']:7.2f} ms  max {result['max_ms']:7.2f} ms  errors {result['errors']}", flush=True)
    return result


# ---------------------------------------------------------------------------------------------------------------
# --abuse: the abusive cases, each against a fresh server, for this checkout and (--before_repo) another, side by
# side in one run.


class Server:
    """`bin/serve --models=MODEL` of the checkout at `repo`, logging to a file, from start to stop."""

    def __init__(self, repo: str, *args: str):
        self.repo, self.port, self.args = repo, free_local_ports(1)[0], args
        self.log_path = os.path.join(FLAGS.work_dir, f"serve-{self.port}.log")

    def __enter__(self):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([sys.executable, os.path.join(self.repo, "bin", "serve"),
                                             f"--models={FLAGS.model}", f"--port={self.port}", *self.args],
                                            cwd=self.repo, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_ready(self.port, self.process)
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def rss_mb(self, pid=None) -> float:
        with open(f"/proc/{pid or self.process.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()


async def one_shot(port: int, payload: bytes, timeout: float = 120.0):
    """(status, body, seconds) of `payload` on a new connection; status 0 when the connection failed."""
    start = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        try:
            writer.write(payload)
            try:
                await asyncio.wait_for(writer.drain(), timeout)
            except OSError:  # the server answered before reading it all, and closed: read that answer
                pass
            status, body, _ = await asyncio.wait_for(_exchange(reader, writer, b""), timeout)
        finally:
            writer.close()
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as error:
        return 0, repr(error).encode(), time.perf_counter() - start
    return status, body, time.perf_counter() - start


def _png_of_zeros(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (width, height), 0).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _percentiles(latencies) -> str:
    if not len(latencies):
        return "no answer"
    values = np.asarray(latencies) * 1000
    return f"p50 {np.percentile(values, 50):.0f} ms, p99 {np.percentile(values, 99):.0f} ms, max {values.max():.0f} ms"


async def _under_attack(port: int, attack: bytes, attackers: int, duration: float, normal):
    """Attackers send `attack` back to back for `duration` s while one client times normal /b requests."""
    stop, outcomes, latencies = time.monotonic() + duration, [], []

    async def attacker():
        while time.monotonic() < stop:
            status, _, seconds = await one_shot(port, attack)
            outcomes.append((status, seconds))

    async def client():
        await asyncio.sleep(0.3)  # the attack first
        index = 0
        while time.monotonic() < stop:
            status, _, seconds = await one_shot(port, normal[index % len(normal)])
            index += 1
            latencies.append(seconds if status == 200 else float("nan"))

    await asyncio.gather(client(), *(attacker() for _ in range(attackers)))
    statuses = sorted({status for status, _ in outcomes})
    attack_ms = np.mean([seconds for _, seconds in outcomes]) * 1000 if outcomes else float("nan")
    failed = int(np.isnan(latencies).sum())
    return (f"normal /b: {_percentiles([x for x in latencies if x == x])} over {len(latencies)} requests"
            f"{f', {failed} failed' if failed else ''}; attack answered {statuses} in {attack_ms:.0f} ms on average")


def case_heavy(server, normal) -> dict:
    """Heavy: 64 images of 4096x4096 (zero PNGs) in one ~1 MB request; normal /b meanwhile."""
    zeros = _png_of_zeros(4096, 4096)
    heavy = post("/v1/models/digits/predict", multipart([("file", f"{i}.png", zeros) for i in range(64)]),
                 "multipart/form-data; boundary=kcaptchaload")
    within_budget = post("/v1/models/digits/predict", multipart([("file", "0.png", zeros)]),
                         "multipart/form-data; boundary=kcaptchaload")
    results = {}
    for name, attack, attackers in (("heavy_1", heavy, 1), ("heavy_4", heavy, 4), ("budget_4", within_budget, 4)):
        results[name] = asyncio.run(_under_attack(server.port, attack, attackers, 8.0, normal))
        asyncio.run(_settle(server.port, normal[0]))
    return results


async def _settle(port: int, normal: bytes, timeout: float = 180.0) -> None:
    """Waits until the server answers a normal request quickly again (the last attack's backlog is done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, seconds = await one_shot(port, normal)
        if status == 200 and seconds < 0.5:
            return
        await asyncio.sleep(0.5)


def case_abandoned(server, normal) -> dict:
    """Heavy requests whose clients hang up once sent; the next normal request; uploads saved."""
    zeros = _png_of_zeros(4096, 4096)
    results = {}
    for name, images_per_request in (("abandoned_64", 64), ("abandoned_budget", 1)):
        payload = post("/v1/models/digits/predict", multipart([("file", f"{i}.png", zeros)
                                                               for i in range(images_per_request)]),
                       "multipart/form-data; boundary=kcaptchaload")

        async def scenario():
            for _ in range(4):
                _, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(payload)
                await writer.drain()
                writer.close()
            await asyncio.sleep(0.3)
            return await one_shot(server.port, normal[0])

        status, _, seconds = asyncio.run(scenario())
        results[name] = f"next normal /b: HTTP {status} in {seconds * 1000:.0f} ms"
    time.sleep(12)  # let any work left finish and be saved
    saved = sum(len(names) for _, _, names in os.walk(server.save_dir)) - 2  # less the two normal requests
    results["saved_after_abandoned"] = f"{saved} of the 4x64 + 4x1 abandoned images saved"
    return results


async def _stall(port: int, head: bytes, body_bytes: int, watch: float):
    """Sends `head` and `body_bytes` of body, then stalls; returns seconds until the server closed it, or None."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = time.monotonic()
        writer.write(head)
        chunk = b"\0" * 65536
        for offset in range(0, body_bytes, len(chunk)):
            writer.write(chunk[:min(len(chunk), body_bytes - offset)])
            await asyncio.wait_for(writer.drain(), watch)
        await asyncio.wait_for(reader.read(), max(0.0, watch - (time.monotonic() - start)))
        return time.monotonic() - start
    except asyncio.TimeoutError:
        return None  # still open
    except OSError:
        return time.monotonic() - start


def _closed_summary(times, watch: float) -> str:
    closed = [t for t in times if t is not None]
    at_once = sum(t < 1.0 for t in closed)
    later = sorted(t for t in closed if t >= 1.0)
    return (f"{len(closed)}/{len(times)} closed within {watch:.0f} s: {at_once} at once"
            + (f", {len(later)} after {later[0]:.1f}-{later[-1]:.1f} s" if later else ""))


def case_stalled(server, normal) -> dict:
    """64 uploads that send 16 MiB - 1 byte and stall; 64 connections that stall mid-headers."""
    size = 16 * 1024 * 1024
    head = (f"POST /v1/models/digits/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    baseline, peak, watch = server.rss_mb(), [0.0], 30.0

    async def scenario():
        async def sample():
            while True:
                peak[0] = max(peak[0], server.rss_mb())
                await asyncio.sleep(0.2)

        sampler = asyncio.ensure_future(sample())
        bodies = asyncio.gather(*(_stall(server.port, head, size - 1, watch) for _ in range(64)))
        headers = asyncio.gather(*(_stall(server.port, b"POST /b HTTP/1.1\r\nHost: x\r\nX-Slow: ", 0, watch)
                                   for _ in range(64)))
        await asyncio.sleep(3)
        status, _, seconds = await one_shot(server.port, normal[0])
        result = await bodies, await headers, (status, seconds)
        sampler.cancel()
        return result

    bodies, headers, (status, seconds) = asyncio.run(scenario())
    return {"stalled_memory": f"RSS {baseline:.0f} MB -> peak {peak[0]:.0f} MB",
            "stalled_bodies": _closed_summary(bodies, watch), "stalled_headers": _closed_summary(headers, watch),
            "normal_during_stall": f"normal /b during the stall: HTTP {status} in {seconds * 1000:.0f} ms"}


def case_parsing(server, normal) -> dict:
    """310,000 small text fields; /healthz meanwhile."""
    body = multipart([("a", None, b"b")] * 310_000, boundary="q")  # 16.1 MB: under the 16 MiB body limit
    payload = post("/v1/models/digits/predict", body, "multipart/form-data; boundary=q")

    async def scenario():
        request = asyncio.ensure_future(one_shot(server.port, payload))
        slowest = 0.0
        while not request.done():
            status, _, seconds = await one_shot(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            slowest = max(slowest, seconds)
        return await request, slowest

    (status, answer, seconds), slowest = asyncio.run(scenario())
    return {"text_fields": f"{len(body) / 1e6:.1f} MB body: HTTP {status} in {seconds * 1000:.0f} ms; slowest "
                           f"/healthz meanwhile {slowest * 1000:.0f} ms"}


def case_errors(server, normal) -> dict:
    """Deep JSON, capitalised media types, clients hanging up mid-upload, the docs' external URLs."""
    import re

    status, body, _ = asyncio.run(one_shot(server.port, post("/v1/models/digits/predict", b"[" * 100_000,
                                                             "application/json")))
    case = normal[0].replace(b"Content-Type: multipart/form-data", b"Content-Type: Multipart/Form-Data", 1)
    case = case.replace(b"POST /b ", b"POST /v1/models/digits/predict ", 1)
    capital, _, _ = asyncio.run(one_shot(server.port, case))
    before = server.log()

    async def hang_up():
        for _ in range(10):
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(normal[0][:len(normal[0]) // 2])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.close()
        await asyncio.sleep(1)

    asyncio.run(hang_up())
    new_log = server.log()[len(before):]
    external = set()
    for page in ("/docs", "/redoc"):
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{page}", timeout=10) as response:
            external |= set(re.findall(r"https?://[^\"' )]+", response.read().decode()))
    return {"deep_json": f"HTTP {status}: {body[:90].decode(errors='replace')}",
            "capital_media_type": f"HTTP {capital}",
            "disconnect_logs": f"10 hang-ups: {new_log.count('Traceback')} tracebacks, "
                               f"{len(new_log.splitlines())} log lines",
            "docs_external_urls": ", ".join(sorted(external)) or "none"}


def case_saving(server, normal) -> dict:
    """100 captchas and 20 1x1 images with --save_uploads (and, where it exists, a 64 KiB quota)."""
    tiny = post("/b", multipart([("image_file", "t.png", _png_of_zeros(1, 1))]), "multipart/form-data; "
                "boundary=kcaptchaload")

    async def scenario():
        for index in range(100):
            await one_shot(server.port, normal[index % len(normal)])
        for _ in range(20):
            await one_shot(server.port, tiny)

    asyncio.run(scenario())
    time.sleep(2)
    sizes = [os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(server.save_dir)
             for name in names]
    return {"save_quota": f"{len(sizes)} files, {sum(sizes) / 1024:.0f} KiB saved from 100 captchas + 20 1x1 "
                          f"images"}


def case_mixed(server, normal) -> dict:
    """10,000 requests from 32 clients, 10% of them malformed, oversized or abandoned; and a clean run."""
    bad = [post("/b", multipart([("image_file", "c.png", b"not an image")]), "multipart/form-data; "
                "boundary=kcaptchaload"),
           (b"POST /v1/models/digits/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 17000000\r\n\r\n" + b"\0" * 65536),
           None]  # None: a normal request abandoned half-sent
    clean = asyncio.run(load(server.port, normal, FLAGS.clients, 9000))
    mixed = asyncio.run(_mixed_load(server.port, normal, bad, FLAGS.clients, 10_000))
    clean_rate = 9000 / clean[2]
    return {"mixed": f"{mixed['normal']} normal at {mixed['normal_rate']:.0f} req/s ({mixed['normal_rate'] / clean_rate:.0%}"
                     f" of the clean run's {clean_rate:.0f}); 5xx: {mixed['5xx']}; normal errors: "
                     f"{mixed['normal_errors']}; server alive: {server.process.poll() is None}"}


async def _mixed_load(port: int, normal, bad, clients: int, total: int) -> dict:
    """As `load` (keep-alive clients), but every 10th request is a bad one, sent on a connection of its own."""
    counts, issued, started = {"normal": 0, "5xx": {}, "normal_errors": 0}, [0], time.perf_counter()

    async def client():
        connection = None
        while issued[0] < total:
            index = issued[0]
            issued[0] += 1
            if index % 10 == 9:
                kind = bad[(index // 10) % len(bad)]
                if kind is None:  # abandoned half-sent
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(normal[0][:len(normal[0]) // 2])
                    writer.close()
                    continue
                status, _, _ = await one_shot(port, kind, timeout=30)
            else:
                try:
                    connection = connection or await asyncio.open_connection("127.0.0.1", port)
                    status, body, keep_alive = await _exchange(*connection, normal[index % len(normal)])
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    status, body, keep_alive = 0, b"", False
                if not keep_alive and connection:
                    connection[1].close()
                    connection = None
                counts["normal"] += 1
                counts["normal_errors"] += status != 200 or b'"value"' not in body
            if status >= 500:
                counts["5xx"][status] = counts["5xx"].get(status, 0) + 1
        if connection:
            connection[1].close()

    await asyncio.gather(*(client() for _ in range(clients)))
    counts["normal_rate"] = counts["normal"] / (time.perf_counter() - started)
    return counts



# ---------------------------------------------------------------------------------------------------------------
# --abuse rows: one abuse each, for --abuse_seconds, sent from another process while this one times normal
# single-image /b requests (one client, one request after another) and samples the server's memory (all its
# processes); then the memory once the abuse has stopped.

def _tree_rss_mb(pid: int) -> float:
    """The resident memory of `pid` and all its descendants, in MB."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    pending.extend(int(child) for child in f.read().split())
        except (OSError, StopIteration):
            continue
    return total


def _abuse_payloads(kind: str):
    """(payload, connections): what each attacking connection sends, again and again, and how many there are."""
    if kind == "stalled_bodies":  # headers of a 50,000-byte body, then nothing
        return (b"POST /v1/models/digits/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                b"boundary=q\r\nContent-Length: 50000\r\n\r\n"), 300
    if kind.startswith("heavy"):  # 64 PNGs of 4096x4096 (zeros) in one ~1 MB body
        zeros = _png_of_zeros(4096, 4096)
        return post("/v1/models/digits/predict", multipart([("file", f"{i}.png", zeros) for i in range(64)]),
                    "multipart/form-data; boundary=kcaptchaload"), int(kind[len("heavy"):])
    if kind == "parts":  # 300,000 tiny text fields
        return post("/v1/models/digits/predict", multipart([("a", None, b"b")] * 300_000, boundary="q"),
                    "multipart/form-data; boundary=q"), 4
    raise ValueError(f"Unknown abuse {kind!r}")


def _attack(port: int, kind: str, seconds: float, started) -> None:
    """Runs in its own process: `connections` attackers send the abuse's payload until `seconds` have passed;
    a stalling attacker keeps its connection open (and opens another when the server closes it)."""
    payload, connections = _abuse_payloads(kind)
    stop = time.monotonic() + seconds
    started.set()

    async def stall():
        while time.monotonic() < stop:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(payload)
                await asyncio.wait_for(reader.read(), max(0.01, stop - time.monotonic()))  # until closed
                writer.close()
            except (OSError, asyncio.TimeoutError):
                await asyncio.sleep(0.05)

    async def send():
        while time.monotonic() < stop:
            await one_shot(port, payload, timeout=max(0.5, stop - time.monotonic()))

    async def run():
        await asyncio.gather(*((stall if kind == "stalled_bodies" else send)() for _ in range(connections)))

    asyncio.run(run())


def abuse_row(server, normal, kind: str) -> dict:
    """Normal /b latency and failures during `kind` (or none), the server's memory before, at its peak during,
    and 5 s after the abuse."""
    import multiprocessing

    pid, seconds = server.process.pid, FLAGS.abuse_seconds
    asyncio.run(load(server.port, normal, 8, 400))  # warm (every worker): the memory before is of a server in use
    time.sleep(1)
    before, peak = _tree_rss_mb(pid), [0.0]
    attacker = None
    if kind != "none":
        context = multiprocessing.get_context("spawn")
        started = context.Event()
        attacker = context.Process(target=_attack, args=(server.port, kind, seconds, started))
        attacker.start()
        started.wait(60)
        time.sleep(1.0)  # the attack first

    async def timed():
        latencies, statuses, stop = [], {}, time.monotonic() + seconds - (1.0 if attacker else 0.0)

        async def sample():
            while True:
                peak[0] = max(peak[0], _tree_rss_mb(pid))
                await asyncio.sleep(0.25)

        sampler, index = asyncio.ensure_future(sample()), 0
        while time.monotonic() < stop:
            status, _, took = await one_shot(server.port, normal[index % len(normal)], timeout=30)
            index += 1
            statuses[status] = statuses.get(status, 0) + 1
            latencies.append(took)
        sampler.cancel()
        return np.array(latencies) * 1000, statuses

    latencies, statuses = asyncio.run(timed())
    if attacker:
        attacker.join(seconds + 60)
    time.sleep(5)
    asyncio.run(load(server.port, normal, 1, 20))
    time.sleep(2)  # the freed memory is given back about a second after large work ends
    after = _tree_rss_mb(pid)
    failed = sum(count for status, count in statuses.items() if status != 200)
    return {f"{kind}: normal p99 ms": f"{np.percentile(latencies, 99):.0f}",
            f"{kind}: normal answered (not 200)": f"{len(latencies)} ({failed}: {statuses})" if failed
            else f"{len(latencies)} (0)",
            f"{kind}: memory MB before / peak / after": f"{before:.0f} / {max(peak[0], before):.0f} / {after:.0f}"}


ROWS = ("none", "stalled_bodies", "heavy8", "heavy16", "parts")

ABUSE_CASES = {"heavy": case_heavy, "abandoned": case_abandoned, "stalled": case_stalled, "parsing": case_parsing,
               "errors": case_errors, "saving": case_saving, "mixed": case_mixed}


def parent_memory(repo: str) -> str:
    with Server(repo, "--workers=2", "--noaccess_log") as server:
        time.sleep(2)
        return f"parent {server.rss_mb():.0f} MB"


def run_abuse() -> dict:
    repos = {"after": REPO_ROOT, **({"before": FLAGS.before_repo} if FLAGS.before_repo else {})}
    results = {}
    for row in [case for case in FLAGS.abuse_cases if case in ROWS]:
        for workers in FLAGS.abuse_workers:
            for version, repo in repos.items():
                print(f"[{version}] {row}, --workers={workers} ...", flush=True)
                with Server(repo, "--noaccess_log", f"--workers={workers}") as server:
                    for key, value in abuse_row(server, captcha_requests(FLAGS.model), row).items():
                        key = f"{key}, --workers={workers}"
                        results.setdefault(key, {})[version] = value
                        print(f"  {key} [{version}]: {value}", flush=True)
    for case in [case for case in FLAGS.abuse_cases if case in ABUSE_CASES]:
        for version, repo in repos.items():
            save_dir = os.path.join(FLAGS.work_dir, f"uploads-{version}-{case}")
            args = ["--noaccess_log"] + ([f"--save_uploads={save_dir}"] if case in ("abandoned", "saving") else [])
            if case == "saving" and version == "after":
                args.append("--save_uploads_max_mb=0.0625")
            print(f"[{version}] {case} ...", flush=True)
            with Server(repo, *args) as server:
                server.save_dir = save_dir
                for key, value in ABUSE_CASES[case](server, captcha_requests(FLAGS.model)).items():
                    results.setdefault(key, {})[version] = value
                    print(f"  {key} [{version}]: {value}", flush=True)
    if "workers" in FLAGS.abuse_cases:
        for version, repo in repos.items():
            results.setdefault("workers_parent_memory", {})[version] = parent_memory(repo)
    print("\n| case | before | after |\n|---|---|---|")
    for key, values in results.items():
        print(f"| {key} | {values.get('before', '')} | {values.get('after', '')} |")
    return results



def main(argv):
    del argv
    if FLAGS.baseline_server:
        return run_baseline_server(FLAGS.model, FLAGS.baseline_server)
    if FLAGS.abuse:
        os.makedirs(FLAGS.work_dir, exist_ok=True)
        print(f"Abusive cases, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
        results = run_abuse()
        if FLAGS.json_out:
            with open(FLAGS.json_out, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=2)
        return
    try:
        payloads = captcha_requests(FLAGS.model)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    print(f"{FLAGS.requests} requests from {FLAGS.clients} concurrent clients to POST /b, model {FLAGS.model!r}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    results = {}
    if FLAGS.servers in ("both", "baseline"):
        port = free_local_ports(1)[0]
        results["baseline"] = measure("baseline", [sys.executable, os.path.abspath(__file__), f"--model={FLAGS.model}",
                                                   f"--baseline_server={port}"], port, payloads)
    if FLAGS.servers in ("both", "serve"):
        port = free_local_ports(1)[0]
        results["serve"] = measure("bin/serve", [
            sys.executable, os.path.join(REPO_ROOT, "bin", "serve"), f"--models={FLAGS.model}", f"--port={port}",
            "--noaccess_log", f"--max_wait_ms={FLAGS.max_wait_ms}", f"--max_batch_size={FLAGS.max_batch_size}", f"--workers={FLAGS.workers}"],
            port, payloads)
    missed = []
    if "serve" in results:
        serve = results["serve"]
        if serve["errors"]:
            missed.append(f"{serve['errors']} errors (target 0): {serve['first_errors']}")
        if serve["p99_ms"] >= P99_TARGET_MS:
            missed.append(f"p99 {serve['p99_ms']} ms (target < {P99_TARGET_MS:.0f} ms)")
        if "baseline" in results:
            speedup = serve["requests_per_s"] / results["baseline"]["requests_per_s"]
            results["speedup"] = round(speedup, 2)
            print(f"  speedup: {speedup:.2f}x the baseline's throughput (target >= {SPEEDUP_TARGET:.0f}x)")
            if speedup < SPEEDUP_TARGET:
                missed.append(f"speedup {speedup:.2f}x (target >= {SPEEDUP_TARGET:.0f}x)")
    results["missed_targets"] = missed
    print("  targets: " + ("all met" if not missed else "MISSED: " + "; ".join(missed)))
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    if FLAGS.check and missed:
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
