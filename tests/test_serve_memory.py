"""bin/serve's memory after abuse: once a burst of heavy requests is over, the server's resident memory is
back within 10% of where it was (the budgets refuse what they can while bodies arrive, and
`kcaptcha.serve.memory` has glibc give freed memory back)."""

import concurrent.futures
import io
import time

import pytest
from PIL import Image

from tests.test_serve import MODEL, digit_captchas, serving

BOUNDARY = "kcaptchamemory"


def zeros_png(size: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (size, size), 0).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def multipart(images) -> bytes:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{i}.png"\r\n\r\n'.encode()
             + data + b"\r\n" for i, data in enumerate(images)]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.mark.slow
def test_memory_returns_after_a_burst_of_heavy_requests(tmp_path):
    samples = [data for _, data in digit_captchas()]
    big = zeros_png(4096)
    over_budget = multipart([big] * 64)  # 64 x 4096^2 pixels: 413
    within_budget = multipart([big])  # one 4096^2 image: decoded, read, 200
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    with serving(tmp_path, f"--models={MODEL}", "--noaccess_log") as server:
        client, pid = server["client"], server["process"].pid
        for index in range(40):  # warm: the memory of a server in use
            client.post("/b", files={"image_file": ("c.png", samples[index % len(samples)])})
        before = rss_mb(pid)

        def send(index):
            body = over_budget if index % 4 else within_budget
            return client.post("/v1/models/digits/predict", content=body, headers=headers).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(send, range(48)))
        peak = rss_mb(pid)
        for index in range(20):  # normal traffic again
            assert client.post("/b", files={"image_file": ("c.png", samples[index % len(samples)])}).status_code == 200
        deadline = time.time() + 10
        while rss_mb(pid) > before * 1.10 and time.time() < deadline:
            time.sleep(0.5)
        after = rss_mb(pid)
    assert sorted(set(statuses)) == [200, 413]
    assert after <= before * 1.10, f"RSS {before:.0f} MB before, {peak:.0f} MB after the burst, {after:.0f} MB later"
