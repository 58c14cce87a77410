"""The serving side's names for the one prediction record, sink and projection (`tailsynth.predictions`), and the
request ids and per-image records that both serving paths write: the KServe transformer and, in the Triton
ensemble, the postprocess model (tailsynth/serve/triton_postprocess_model.py)."""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import DataError
from ..predictions import (
    RECORD_FIELDS,
    RECOVERY_WRITES,
    Embedder,
    JsonlSink,
    RecordWriteError,
    image_statistics,
    prediction_record,
    read_ledger,
)
from ..predictions import read_jsonl as read_records

Projection = Embedder.from_file  # the repository's embedding.npz -> a callable projection of features

MAX_REQUEST_ID = 128
_ID_JUNK = re.compile(r"[^A-Za-z0-9._:-]")
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count()


def new_request_id() -> str:
    """A request id unique within and across server processes: a random per-process prefix and a counter.

    (uuid4 reads os.urandom on every call, a system call that was 3% of the transformer's CPU at concurrency 32.)"""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):010x}"


def sanitize_request_id(value) -> str | None:
    """A client-supplied request id, cut to safe characters and MAX_REQUEST_ID chars (None when nothing is left).

    It is copied into every prediction record, so an unbounded id would let one request inflate the records."""
    if value is None:
        return None
    clean = _ID_JUNK.sub("", str(value)[: 4 * MAX_REQUEST_ID])[:MAX_REQUEST_ID]
    return clean or None


def build_records(request_id: str, hashes: Sequence[str], images: np.ndarray, probabilities: np.ndarray,
                  features: np.ndarray | None, classes: Sequence[str], model_version: str,
                  projection=None) -> list[dict]:
    """One record per image of a request: its hash, statistics of its model input, probabilities, top class and
    (with the monitoring projection) a low-dimensional embedding. Never the image itself."""
    probs = np.asarray(probabilities, np.float32)
    top = [classes[i] for i in probs.argmax(1)] if len(probs) else []
    emb = projection(np.asarray(features, np.float32)) if projection is not None else [None] * len(top)
    return [prediction_record(request_id=request_id, image_sha256=h, predicted_class=c,
                              probabilities=dict(zip(classes, p.tolist())), model_version=model_version,
                              embedding=None if e is None else e.tolist(), image_stats=image_statistics(img), item=i)
            for i, (h, c, p, e, img) in enumerate(zip(hashes, top, probs, emb, images))]


class WriteFailureLog:
    """One log line per burst of failed record writes, not one per request: the first failure of a burst (file,
    errno, what it means for requests), a reminder every REMIND_S while it lasts, and one line when writes
    succeed again (RECOVERY_WRITES in a row) with how many were dropped. EMIT(level, message) writes the line:
    `logging` in the transformer, Triton's logger in the postprocess model."""

    REMIND_S = 60.0

    def __init__(self, emit: Callable[[str, str], None], clock: Callable[[], float] = time.monotonic):
        self.emit = emit
        self.clock = clock
        self.burst_writes = 0
        self.burst_records = 0
        self._ok_streak = 0  # successes since the burst's last failure; RECOVERY_WRITES in a row end it
        self._since = self._reminded = 0.0

    def failed(self, err: RecordWriteError) -> None:
        now = self.clock()
        if self.burst_writes == 0:
            self._since = self._reminded = now
            self.emit("error", f"prediction records: write to {err.path} failed with {err.errno_name} "
                               f"({err.cause.strerror or err.cause}); requests are still answered, their records "
                               f"are dropped and counted (metrics, {err.path}.write-failures) until writes "
                               f"succeed again")
        elif now - self._reminded >= self.REMIND_S:
            self._reminded = now
            self.emit("error", f"prediction records: writes to {err.path} still failing ({err.errno_name}): "
                               f"{self.burst_writes + 1} writes, {self.burst_records + err.records} records "
                               f"dropped in {now - self._since:.0f}s")
        self.burst_writes += 1
        self.burst_records += err.records
        self._ok_streak = 0

    def succeeded(self, path) -> None:
        if not self.burst_writes:
            return
        self._ok_streak += 1
        if self._ok_streak >= RECOVERY_WRITES:
            self.emit("warning", f"prediction records: writing to {path} again after {self.burst_writes} failed "
                                 f"write(s) ({self.burst_records} records dropped) over "
                                 f"{self.clock() - self._since:.0f}s")
            self.burst_writes = self.burst_records = self._ok_streak = 0


class LedgerWatch:
    """The same burst lines for writes done in another process (the ensemble's postprocess model inside
    Triton), read from the failure ledger beside the records: `poll()` returns the lines to log since the last
    call, so the launcher's log says what Triton's temporary log would otherwise hold alone."""

    def __init__(self, records):
        self.records = str(records)
        led = read_ledger(self.records) or {}
        self._writes = int(led.get("failed_writes", 0))
        self._records = int(led.get("failed_records", 0))
        self._start = (self._writes, self._records)
        self._in_burst = False
        self._damaged = False

    def poll(self) -> list[tuple[str, str]]:
        try:
            led = read_ledger(self.records) or {}
        except (DataError, OSError) as e:  # a damaged ledger must not stop the server; said once
            said, self._damaged = self._damaged, True
            return [] if said else [("warning", f"prediction records: {e}")]
        self._damaged = False
        writes, recs = int(led.get("failed_writes", 0)), int(led.get("failed_records", 0))
        lines = []
        if writes > self._writes:
            if not self._in_burst:
                lines.append(("error", (f"prediction records: writes to {self.records} are failing "
                                        f"({led.get('last_errno')}: {led.get('last_error')}); requests are still "
                                        f"answered, their records dropped and counted in "
                                        f"{self.records}.write-failures")))
            self._in_burst = True
        # Both stamps are written by the sinks in order (failure, then the first success after it).
        recovered = (led.get("recovered_at") or "") >= (led.get("last_failure_at") or "~")
        if self._in_burst and recovered:
            lines.append(("warning", (f"prediction records: writing to {self.records} again; "
                                      f"{recs - self._start[1]} records dropped in {writes - self._start[0]} "
                                      f"failed write(s) since the server started")))
            self._in_burst = False
        self._writes, self._records = writes, recs
        return lines

    def summary(self) -> str | None:
        """One closing line when writes failed during this run."""
        led = read_ledger(self.records) or {}
        writes = int(led.get("failed_writes", 0)) - self._start[0]
        if writes <= 0:
            return None
        return (f"prediction records: {writes} write(s) failed during this run, "
                f"{int(led.get('failed_records', 0)) - self._start[1]} records dropped "
                f"(ledger {self.records}.write-failures)")


__all__ = ["RECORD_FIELDS", "JsonlSink", "LedgerWatch", "Projection", "RecordWriteError", "WriteFailureLog",
           "build_records", "new_request_id", "prediction_record", "read_records", "sanitize_request_id"]
