"""Prediction records: one JSON line per classified image, for monitoring. Never the image bytes, only a hash.

The monitoring package (tailsynth.monitor.records) owns the full schema; this is the serving side's
minimal record, built in one place so fields can be added without touching the transformer.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

RECORD_FIELDS = ("timestamp", "request_id", "image_sha256", "predicted_class", "probabilities", "model_version")


def prediction_record(*, request_id: str, image_sha256: str, predicted_class: str,
                      probabilities: Mapping[str, float], model_version: str,
                      embedding: Sequence[float] | None = None, image_stats: Mapping[str, float] | None = None,
                      timestamp: str | None = None, **extra) -> dict:
    rec = {
        "timestamp": timestamp or datetime.now(UTC).isoformat(timespec="milliseconds"),
        "request_id": str(request_id),
        "image_sha256": image_sha256,
        "predicted_class": predicted_class,
        "probabilities": {k: float(v) for k, v in probabilities.items()},
        "model_version": model_version,
    }
    if embedding is not None:
        rec["embedding"] = [round(float(v), 6) for v in embedding]
    if image_stats is not None:
        rec["image_stats"] = dict(image_stats)
    rec.update(extra)
    return rec


class JsonlSink:
    """Append-only JSONL file; one lock so concurrent requests never interleave lines."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, records: Sequence[dict]) -> None:
        if not records:
            return
        text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno()) if os.environ.get("TAILSYNTH_FSYNC_RECORDS") else None


class Projection:
    """Maps penultimate features to the monitoring embedding: (f - mean) @ components.T (a PCA from the
    monitoring reference, `MODEL_DIR/monitor/embedding.npz`, copied into the repository by the export)."""

    def __init__(self, path: str | Path):
        import numpy as np

        z = np.load(path)
        self.mean = z["mean"].astype("float32")
        self.components = z["components"].astype("float32")

    def __call__(self, features):
        if features.shape[-1] != self.components.shape[1]:
            raise ValueError(f"features have {features.shape[-1]} dims, the embedding projection expects "
                             f"{self.components.shape[1]}")
        return (features.astype("float32") - self.mean) @ self.components.T


def read_records(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
