"""python benchmarks/serve_load.py --model=digits [--clients=32] [--requests=10000]

Load test on loopback: `--clients` concurrent keep-alive clients POST generated captchas to `/b` until
`--requests` have been answered, first against a parent-style baseline (a threaded Flask server, each
request one `Recognizer.predict` call on one image, same model), then against `bin/serve`. Reports
requests/s, p50/p99 latency and errors for both, and checks the targets: at least 3x the baseline's
throughput, p99 under 100 ms, zero errors. `--check` makes a missed target exit 1.

Flask is a benchmark-only dependency: `pip install flask`.
"""

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
from absl import app, flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

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
FLAGS = flags.FLAGS

SPEEDUP_TARGET, P99_TARGET_MS = 3.0, 100.0


def run_baseline_server(model: str, port: int) -> None:
    """The parent's design: Flask, one thread per connection, one `predict` call per request."""
    import logging

    from flask import Flask, jsonify, request
    from werkzeug.serving import WSGIRequestHandler

    from kcaptcha.recognizer import load_model

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def captcha_requests(model: str, count: int = 64):
    """`count` ready-to-send multipart POST /b requests with captchas sized for `model`."""
    from kcaptcha import saving
    from kcaptcha.generate import CaptchaRenderer

    meta = saving.read_metadata(saving.resolve_model_dir(model))
    renderer = CaptchaRenderer(meta["charset"], int(meta["min_length"]), int(meta["max_length"]),
                               int(meta["width"]), int(meta["height"]), seed=20240601)
    requests = []
    for index in range(count):
        buffer = io.BytesIO()
        renderer.render(index)[1].save(buffer, "PNG")
        boundary = f"kcaptchaload{index}"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image_file\"; filename=\"c.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + buffer.getvalue() + f"\r\n--{boundary}--\r\n".encode()
        head = (f"POST /b HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        requests.append(head + body)
    return requests


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


def main(argv):
    del argv
    if FLAGS.baseline_server:
        return run_baseline_server(FLAGS.model, FLAGS.baseline_server)
    try:
        payloads = captcha_requests(FLAGS.model)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    print(f"{FLAGS.requests} requests from {FLAGS.clients} concurrent clients to POST /b, model {FLAGS.model!r}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    results = {}
    if FLAGS.servers in ("both", "baseline"):
        port = free_port()
        results["baseline"] = measure("baseline", [sys.executable, os.path.abspath(__file__), f"--model={FLAGS.model}",
                                                   f"--baseline_server={port}"], port, payloads)
    if FLAGS.servers in ("both", "serve"):
        port = free_port()
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
