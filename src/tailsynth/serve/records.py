"""The serving side's names for the one prediction record, sink and projection (`tailsynth.predictions`), and the
request ids and per-image records that both serving paths write: the KServe transformer and, in the Triton
ensemble, the postprocess model (tailsynth/serve/triton_postprocess_model.py)."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Sequence

import numpy as np

from ..predictions import RECORD_FIELDS, Embedder, JsonlSink, prediction_record
from ..predictions import read_jsonl as read_records
from .images import image_stats

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
                              embedding=None if e is None else e.tolist(), image_stats=image_stats(img), item=i)
            for i, (h, c, p, e, img) in enumerate(zip(hashes, top, probs, emb, images))]


__all__ = ["RECORD_FIELDS", "JsonlSink", "Projection", "build_records", "new_request_id", "prediction_record",
           "read_records", "sanitize_request_id"]
