"""The decoding lanes and the batching thread on their own, with a stand-in model."""

import asyncio
import concurrent.futures
import time

import numpy as np
import pytest

from kcaptcha.serve import batching, decoders, uploads
from tests.test_serve_limits import HeldRecognizer, gray_png


def decoding(pool, recognizer, batch, max_image_pixels=10 ** 8, max_request_pixels=10 ** 8, on_done=None):
    """Submits `batch` to `pool`; returns the (concurrent) future of its model inputs."""
    done = concurrent.futures.Future()

    def deliver(arrays, error, seconds):
        if on_done:
            on_done()
        done.set_exception(error) if error is not None else done.set_result(arrays)

    pool.submit(recognizer, batch, decoders.Ticket(), max_image_pixels, max_request_pixels, deliver)
    return done


def test_heavy_requests_are_decoded_in_their_own_lane_behind_light_ones():
    fake = HeldRecognizer(slow_pixels=512 * 512)
    pool = decoders.DecodePool(light_threads=2, light_pixels=100_000)
    finished = []

    def request(value, size):
        return [uploads.Upload(gray_png(value, size), f"#{value}")]

    try:
        heavy = [decoding(pool, fake, request(i, (600, 600)), on_done=lambda i=i: finished.append(f"heavy{i}"))
                 for i in range(3)]
        time.sleep(0.05)
        light = decoding(pool, fake, request(9, (3, 2)), on_done=lambda: finished.append("light"))
        assert light.result(10)[0][0, 0] == 9 and [future.result(10)[0][0, 0] for future in heavy] == [0, 1, 2]
    finally:
        pool.close()
    assert finished[0] == "light", finished  # not behind 3 x 0.3 s of heavy decoding


def test_the_request_pixel_budget_holds_before_any_pixel_is_decoded():
    fake = HeldRecognizer(slow_pixels=1)  # any decode would take 0.3 s
    pool = decoders.DecodePool()
    batch = [uploads.Upload(gray_png(1, (100, 100)), "#1"), uploads.Upload(gray_png(2, (100, 100)), "#2")]
    started = time.monotonic()
    try:
        with pytest.raises(uploads.ApiError, match="20000 pixels together; the limit is 15000") as raised:
            decoding(pool, fake, batch, 10_000, 15_000).result(10)
    finally:
        pool.close()
    assert raised.value.status == 413 and time.monotonic() - started < 0.2


def test_batcher_gathers_requests_that_arrive_while_the_model_is_busy():
    fake = HeldRecognizer()
    batcher = batching.Batcher(fake, max_batch_size=4, max_wait_ms=1)

    async def scenario():
        fake.hold()
        first = batcher.submit(np.full((2, 3), 0.0, np.float32), decoders.Ticket())
        assert await asyncio.get_running_loop().run_in_executor(None, fake.busy.wait, 30)
        abandoned = decoders.Ticket()
        rest = [batcher.submit(np.full((2, 3), float(v), np.float32), abandoned if v == 5 else decoders.Ticket())
                for v in range(1, 10)]
        abandoned.abandon()
        fake.release()
        live = [future for v, future in zip(range(1, 10), rest) if v != 5]
        return await asyncio.gather(first, *live)

    try:
        results = asyncio.run(scenario())
    finally:
        batcher.close()
    assert fake.batch_sizes == [2, 1, 4, 4]  # the warm-up, the held call, then 8 queued images by 4
    assert [prediction.text for prediction, _ in results] == ["0", "1", "2", "3", "4", "6", "7", "8", "9"]
    assert 5 not in fake.read and batcher.stats["dropped"] == 1 and results[1][1]["batch_size"] == 4


def test_batcher_survives_a_failing_model_call():
    fake = HeldRecognizer(fail_on=7)
    batcher = batching.Batcher(fake, max_wait_ms=0)

    async def scenario():
        failed = await asyncio.gather(batcher.submit(np.full((2, 3), 7.0, np.float32), decoders.Ticket()),
                                      return_exceptions=True)
        return failed[0], await batcher.submit(np.full((2, 3), 5.0, np.float32), decoders.Ticket())

    try:
        failed, (fine, _) = asyncio.run(scenario())
    finally:
        batcher.close()
    assert isinstance(failed, RuntimeError) and fine.text == "5"
