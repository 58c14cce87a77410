"""The coalescer merges concurrent requests into predictor calls without mixing up their answers."""

import asyncio

import numpy as np
import pytest

from tailsynth.serve.backends import PredictorError
from tailsynth.serve.coalesce import Coalescer


class RowModel:
    """A predictor whose answer for each row depends on that row only (as the classifier's does): any mix-up of
    rows between merged requests shows in the results. It records the batch size of every call."""

    def __init__(self, delay_s: float = 0.01, fail_on: int | None = None, drop_row: bool = False):
        self.delay_s, self.fail_on, self.drop_row = delay_s, fail_on, drop_row
        self.sizes: list[int] = []

    @staticmethod
    def answer(batch: np.ndarray):
        flat = batch.reshape(len(batch), -1).astype(np.float32)
        return np.stack([flat.mean(1), flat.max(1)], 1), flat[:, :4] * 2

    async def __call__(self, batch: np.ndarray):
        self.sizes.append(len(batch))
        await asyncio.sleep(self.delay_s)
        if self.fail_on is not None and len(self.sizes) == self.fail_on:
            raise ConnectionError("predictor went away")
        p, f = self.answer(batch)
        return (p[:-1], f[:-1]) if self.drop_row else (p, f)


def images(i: int, n: int = 1) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)


def run(coro):
    return asyncio.run(coro)


async def arriving(c: Coalescer, batches: list, gap_s: float = 0.001):
    """Requests that arrive one after another, gap_s apart, as a server's do (not all in one loop tick)."""
    async def one(i, b):
        await asyncio.sleep(i * gap_s)
        return await c.predict(b)

    return await asyncio.gather(*(one(i, b) for i, b in enumerate(batches)), return_exceptions=True)


def test_concurrent_requests_are_merged_and_each_gets_its_own_rows():
    model = RowModel()

    async def go():
        c = Coalescer(model, max_rows=8)
        batches = [images(i, n=1 + i % 3) for i in range(24)]
        got = await arriving(c, batches)
        return c, batches, got

    c, batches, got = run(go())
    for b, (p, f) in zip(batches, got):
        ep, ef = RowModel.answer(b)
        np.testing.assert_array_equal(p, ep)
        np.testing.assert_array_equal(f, ef)
    assert sum(model.sizes) == sum(len(b) for b in batches)
    assert len(model.sizes) < len(batches), model.sizes  # merged
    assert max(model.sizes) <= 8
    assert model.sizes[0] == len(batches[0])  # the first request did not wait for company
    assert c.calls == len(model.sizes)


def test_a_lone_request_goes_straight_through():
    model = RowModel(delay_s=0)

    async def go():
        c = Coalescer(model, max_rows=32)
        for i in range(3):  # one after another: nothing to merge
            p, _ = await c.predict(images(i))
            np.testing.assert_array_equal(p, RowModel.answer(images(i))[0])

    run(go())
    assert model.sizes == [1, 1, 1]


def test_a_request_above_max_rows_is_sent_alone():
    model = RowModel()

    async def go():
        c = Coalescer(model, max_rows=4)
        return await asyncio.gather(c.predict(images(0, 3)), c.predict(images(1, 6)), c.predict(images(2, 1)))

    got = run(go())
    assert [len(p) for p, _ in got] == [3, 6, 1]
    assert 6 in model.sizes and max(model.sizes) == 6 and sum(model.sizes) == 10


def test_more_calls_in_flight_when_allowed():
    model = RowModel(delay_s=0.02)

    async def go():
        c = Coalescer(model, max_rows=64, max_calls=2)
        return await arriving(c, [images(i) for i in range(10)])

    run(go())
    assert model.sizes[:2] == [1, 1]  # two calls started before any merging
    assert sum(model.sizes) == 10


def test_a_failed_call_fails_every_request_in_it_and_the_next_call_works():
    model = RowModel(fail_on=2)

    async def go():
        c = Coalescer(model, max_rows=32)
        first = await arriving(c, [images(i) for i in range(6)])
        after = await c.predict(images(99))
        return first, after

    first, after = run(go())
    failed = [r for r in first if isinstance(r, Exception)]
    assert failed and all(isinstance(r, PredictorError) and "went away" in str(r) for r in failed)
    assert len(failed) == model.sizes[1]  # exactly the requests merged into the failed call
    assert not isinstance(first[0], Exception)
    np.testing.assert_array_equal(after[0], RowModel.answer(images(99))[0])


def test_a_short_answer_is_a_predictor_error_not_a_misaligned_result():
    async def go():
        c = Coalescer(RowModel(drop_row=True), max_rows=32)
        return await asyncio.gather(*(c.predict(images(i)) for i in range(4)), return_exceptions=True)

    got = run(go())
    assert all(isinstance(r, PredictorError) and "rows" in str(r) for r in got)


def test_a_caller_that_goes_away_does_not_disturb_the_others():
    model = RowModel(delay_s=0.02)

    async def go():
        c = Coalescer(model, max_rows=32)
        tasks = [asyncio.ensure_future(c.predict(images(i))) for i in range(5)]
        await asyncio.sleep(0)
        tasks[3].cancel()  # queued behind the first call
        done = await asyncio.gather(*tasks, return_exceptions=True)
        return done

    got = run(go())
    assert isinstance(got[3], asyncio.CancelledError)
    for i in (0, 1, 2, 4):
        np.testing.assert_array_equal(got[i][0], RowModel.answer(images(i))[0])
    assert sum(model.sizes) == 4


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_rows"):
        Coalescer(RowModel(), max_rows=0)
