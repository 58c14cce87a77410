"""Truthful health: readiness follows the predictor, not the transformer process.

A probe runs a real inference on a cached tiny input every `interval_s`. One failure makes the endpoint
not ready (HTTP 503) at once, so Kubernetes stops routing to a pod whose predictor is dead; the probe keeps
running and readiness comes back with the first success. A `recover` hook (the local launcher restarts or
reloads its Triton) is called after each failure; when it gives up, or when the predictor has failed for
`dead_after_s`, liveness fails too, and `on_fatal` lets the launcher exit non-zero.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("tailsynth.health")


class PredictorHealth:
    def __init__(self, probe: Callable[[], Awaitable[object]], interval_s: float = 1.0, timeout_s: float = 2.0,
                 recover: Callable[[int], bool] | None = None, on_fatal: Callable[[str], None] | None = None,
                 dead_after_s: float = 120.0):
        self.probe = probe
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.recover = recover
        self.on_fatal = on_fatal
        self.dead_after_s = dead_after_s
        self.ok = False
        self.fatal: str | None = None
        self.failures = 0
        self.failing_since: float | None = None
        self.last_error = "not probed yet"
        self._wake = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self.ok and self.fatal is None

    @property
    def live(self) -> bool:
        if self.fatal is not None:
            return False
        return self.failing_since is None or time.monotonic() - self.failing_since < self.dead_after_s

    def reason(self) -> str:
        if self.fatal:
            return f"predictor unrecoverable: {self.fatal}"
        return "ready" if self.ready else f"predictor not ready: {self.last_error}"

    def report_failure(self, error: str) -> None:
        """A real request failed on the predictor: not ready now, and probe again without waiting."""
        self._mark_failed(error)
        self._wake.set()

    def _mark_failed(self, error: str) -> None:
        if self.ok:
            log.warning("predictor failed, endpoint not ready: %s", error)
        self.ok = False
        self.last_error = error
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = time.monotonic()

    async def check_once(self) -> bool:
        try:
            await asyncio.wait_for(self.probe(), self.timeout_s)
        except Exception as e:  # any failure of the probe inference is a failed predictor
            msg = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            self._mark_failed(msg[:500])
            return False
        if not self.ok and self.failures:
            log.warning("predictor answers again after %d failed probe(s); endpoint ready", self.failures)
        self.ok, self.failures, self.failing_since, self.last_error = True, 0, None, ""
        return True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while self.fatal is None:
            if not await self.check_once() and self.recover is not None:
                try:
                    recovered = await loop.run_in_executor(None, self.recover, self.failures)
                except Exception as e:
                    log.error("predictor recovery raised %s: %s", type(e).__name__, e)
                    recovered = False
                if recovered is False:
                    self.fatal = self.last_error
                    log.error("predictor cannot be recovered (%s); liveness fails", self.last_error)
                    if self.on_fatal is not None:
                        self.on_fatal(self.last_error)
                    return
                if recovered:
                    continue  # probe the recovered predictor at once
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            except asyncio.TimeoutError:
                pass
