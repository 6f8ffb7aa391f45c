"""python benchmarks/model_swap.py [--clients=32] [--seconds=40] [--swap_every=10]

`bin/serve --models_dir` swapping a model under load, on loopback: `--clients` keep-alive clients POST
captchas to `/b` for `--seconds`, while the served folder `m` is replaced every `--swap_every` s, the shipped
`digits` and `alnum` in turn, as `bin/train --overwrite` replaces a saved model (a new folder renamed in).
Reports the requests answered, the failed ones (anything but 200 with a reading), the time from each
replacement to the new model being served, and the latency of the requests sent while a swap was under way
(from the replacement until one second after the new model was served) beside the others'.
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
from absl import app, flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
from benchmarks.serve_load import _exchange, captcha_requests, wait_ready  # noqa: E402
from tests.ports import free_local_ports  # noqa: E402

flags.DEFINE_integer("seconds", 40, "How long the clients send requests.", lower_bound=1)
flags.DEFINE_float("swap_every", 10.0, "Seconds between two replacements of the served model.", lower_bound=1.0)
flags.DEFINE_float("poll_interval", 2.0, "bin/serve's --poll_interval.")
FLAGS = flags.FLAGS


def served_model(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as response:
        models = json.load(response)["models"]
    return models[0]["metadata"]["name"] if models else ""


def replace(model_dir: str, shipped: str) -> None:
    """What `bin/train --overwrite` does: the new folder written beside, then renamed in place of the old."""
    from kcaptcha import files
    from kcaptcha.export import saving

    files.replace_folder(model_dir, lambda staging: shutil.copytree(
        os.path.join(saving.SHIPPED_MODELS_DIR, shipped), staging, dirs_exist_ok=True))


async def clients(port: int, payloads, count: int, seconds: float, records: list):
    """`count` keep-alive clients until `seconds` have passed; records (start, latency, ok) per request."""
    end = time.monotonic() + seconds

    async def client(index):
        connection, sent = None, index
        while time.monotonic() < end:
            start = time.monotonic()
            try:
                if connection is None:
                    connection = await asyncio.open_connection("127.0.0.1", port)
                status, body, keep_alive = await _exchange(*connection, payloads[sent % len(payloads)])
                ok = status == 200 and b'"value"' in body
            except (OSError, asyncio.IncompleteReadError, ValueError):
                ok, keep_alive = False, False
            records.append((start, time.monotonic() - start, ok))
            sent += count
            if not keep_alive and connection is not None:
                connection[1].close()
                connection = None
        if connection is not None:
            connection[1].close()

    await asyncio.gather(*(client(i) for i in range(count)))


async def swaps(port: int, model_dir: str, seconds: float, every: float, windows: list):
    """Replaces the model every `every` s; records (replaced at, served at) per swap."""
    end, shipped = time.monotonic() + seconds, ["alnum", "digits"]
    while time.monotonic() + every + 3 < end:
        await asyncio.sleep(every)
        new = shipped[len(windows) % 2]
        replaced = time.monotonic()
        await asyncio.to_thread(replace, model_dir, new)
        while await asyncio.to_thread(served_model, port) != new:
            await asyncio.sleep(0.05)
        windows.append((replaced, time.monotonic()))


def main(argv):
    del argv
    work = tempfile.mkdtemp(prefix="kcaptcha_swap_")
    model_dir = os.path.join(work, "models", "m")
    replace(model_dir, "digits")
    port = free_local_ports(1)[0]
    command = [sys.executable, os.path.join(REPO_ROOT, "bin", "serve"), f"--port={port}", "--noaccess_log",
               f"--models_dir={os.path.dirname(model_dir)}", f"--poll_interval={FLAGS.poll_interval}"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    records, windows = [], []
    try:
        wait_ready(port, process)
        payloads = captcha_requests("digits")  # 100x60: the only model served reads every /b request

        async def run():
            await asyncio.gather(clients(port, payloads, FLAGS.clients, FLAGS.seconds, records),
                                 swaps(port, model_dir, FLAGS.seconds, FLAGS.swap_every, windows))

        asyncio.run(run())
    finally:
        process.terminate()
        log = process.communicate(timeout=60)[1].decode(errors="replace")
        shutil.rmtree(work, ignore_errors=True)
    during = np.array([latency for start, latency, _ in records
                       if any(replaced <= start <= served + 1.0 for replaced, served in windows)])
    other = np.array([latency for start, latency, _ in records
                      if not any(replaced <= start <= served + 1.0 for replaced, served in windows)])
    failed = sum(1 for *_, ok in records if not ok)

    def line(name, latencies):
        if not len(latencies):
            return f"{name}: none"
        p50, p99 = np.percentile(latencies, [50, 99]) * 1000
        return (f"{name}: {len(latencies)} requests, p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
                f"max {latencies.max() * 1000:.0f} ms")

    print(f"{len(records)} requests from {FLAGS.clients} clients in {FLAGS.seconds} s, {failed} failed; "
          f"{len(windows)} swaps, each served {', '.join(f'{s - r:.1f}' for r, s in windows)} s after its "
          f"replacement (--poll_interval={FLAGS.poll_interval:g})")
    print(line("during a swap", during))
    print(line("otherwise", other))
    if "Traceback" in log:
        print(log[-3000:], file=sys.stderr)


if __name__ == "__main__":
    app.run(main)
