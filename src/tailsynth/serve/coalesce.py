"""Merge the image batches of concurrent requests into one predictor call.

Why: each predictor call costs a fixed slice of Python in the transformer (building the v2 request, the HTTP round
trip through the Triton client, parsing its answer) and a fixed slice of Triton (one request through the scheduler
and the python-backend stub). At concurrency 32 on 2 cores that fixed cost, paid once per image, was most of what
separated the endpoint from a client talking to Triton directly. Merging pays it once per merged batch.

No request waits for company: a call starts at once while fewer than `max_calls` are in flight, so a lone request
goes straight through. Requests that arrive while calls are in flight queue up and leave together, up to
`max_rows` images (the predictor's max batch size), in arrival order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

import numpy as np

from .backends import PredictorError

Predict = Callable[[np.ndarray], Awaitable[tuple[np.ndarray, np.ndarray]]]


class Coalescer:
    def __init__(self, predict: Predict, max_rows: int, max_calls: int = 1):
        if max_rows < 1 or max_calls < 1:
            raise ValueError(f"max_rows {max_rows} and max_calls {max_calls} must be >= 1")
        self._predict = predict
        self.max_rows = max_rows
        self.max_calls = max_calls
        self._queue: deque[tuple[np.ndarray, asyncio.Future]] = deque()
        # Counted here, not by the tasks' done callbacks: a drain that found the queue empty must count as gone
        # before the next request checks, or that request would wait for a drain that never comes.
        self._active = 0
        self._drains: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones
        self.calls = 0  # predictor calls made (merged batches)

    async def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, features) for this batch's rows, exactly as a call of its own would return them."""
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((batch, fut))
        if self._active < self.max_calls:
            self._active += 1
            task = asyncio.ensure_future(self._drain())
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)
        return await fut  # a cancelled caller only cancels its future; the merged call goes on for the others

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        group, rows = [], 0
        while self._queue:
            batch, fut = self._queue[0]
            if fut.done():  # its caller went away before the call was made
                self._queue.popleft()
                continue
            if group and rows + len(batch) > self.max_rows:
                break
            self._queue.popleft()
            group.append((batch, fut))
            rows += len(batch)
        return group

    async def _drain(self) -> None:
        try:
            while True:
                group = self._take()
                if not group:
                    return
                try:
                    await self._call(group)
                except asyncio.CancelledError:  # the server is shutting down
                    for _, fut in group:
                        fut.cancel()
                    raise
        finally:
            self._active -= 1

    async def _call(self, group: list[tuple[np.ndarray, asyncio.Future]]) -> None:
        batch = group[0][0] if len(group) == 1 else np.concatenate([b for b, _ in group])
        self.calls += 1
        try:
            probs, feats = await self._predict(batch)
            probs, feats = np.asarray(probs), np.asarray(feats)
            if len(probs) != len(batch) or len(feats) != len(batch):
                raise PredictorError(f"predictor returned {len(probs)} probability and {len(feats)} feature rows "
                                     f"for a batch of {len(batch)} images")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 (any failure of the call is every merged request's failure)
            msg = str(e) if isinstance(e, PredictorError) else f"predictor failed: {e}"
            for _, fut in group:
                if not fut.done():
                    fut.set_exception(PredictorError(msg))
            return
        start = 0
        for b, fut in group:
            n = len(b)
            if not fut.done():
                fut.set_result((probs[start:start + n], feats[start:start + n]))
            start += n
