"""The prediction record: one typed schema, one JSONL sink and one embedding projection, shared by the serving
transformer (which writes records) and the monitor (which writes them in replays and reads them all).

No image bytes ever leave the service: a record holds the image's SHA-256, a few image statistics, the class
probabilities and a low-dimensional embedding (PCA of the classifier's penultimate features, fitted on the
monitoring reference and stored beside the model in MODEL_DIR/monitor/embedding.npz).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError, MissingInputError

SCHEMA_VERSION = 1
IMAGE_STAT_COLUMNS = ("brightness", "contrast", "sharpness", "saturation", "mean_r", "mean_g", "mean_b", "height",
                      "width")
MONITOR_DIR = "monitor"  # beside model.pt
EMBEDDING_FILE = "embedding.npz"
# Names an earlier serving-side record used for two fields; logs written then are still read.
_OLD_NAMES = {"image_sha256": "image_hash", "predicted_class": "predicted"}


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class PredictionRecord:
    timestamp: str  # ISO-8601 UTC
    request_id: str
    image_hash: str  # SHA-256 of the image bytes as received (or of the decoded array in replays)
    model_version: str
    predicted: str  # class name
    confidence: float  # the predicted class's probability
    probabilities: dict[str, float]
    embedding: list[float] = field(default_factory=list)  # empty without a projection
    image_stats: dict[str, float] = field(default_factory=dict)
    label: str | None = None  # ground truth from labelled feedback
    source: str | None = None  # free text (replay, drill, ...)
    item: int | None = None  # the image's index within its request
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, rec: object, where: str) -> PredictionRecord:
        """Check one record read from a log; errors name WHERE (file:line) and the field."""
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        rec = {_OLD_NAMES.get(k, k): v for k, v in rec.items()}
        rid = rec.get("request_id", "?")
        unknown = sorted(set(rec) - {f.name for f in fields(cls)})
        if unknown:
            raise DataError(f"{where}: record {rid}: unknown field(s) {', '.join(unknown)}")
        for f in ("timestamp", "image_hash", "predicted", "probabilities", "model_version"):
            if f not in rec:
                raise DataError(f"{where}: record {rid} lacks field {f!r}")
        if not isinstance(rec["probabilities"], dict) or rec["predicted"] not in rec["probabilities"]:
            raise DataError(f"{where}: record {rid}: field 'probabilities' must map class names to probabilities "
                            f"and contain the predicted class {rec['predicted']!r}")
        if not isinstance(rec.get("image_stats", {}), dict):
            raise DataError(f"{where}: record {rid}: field 'image_stats' must be an object")
        rec.setdefault("request_id", uuid.uuid4().hex)
        rec.setdefault("confidence", float(rec["probabilities"][rec["predicted"]]))
        rec["embedding"] = rec.get("embedding") or []
        rec["image_stats"] = rec.get("image_stats") or {}
        return cls(**rec)


def make_record(*, probabilities: Sequence[float], classes: Sequence[str], image_stats: Mapping[str, float],
                image_hash: str, model_version: str, embedding: Sequence[float] | None = None,
                request_id: str | None = None, timestamp: str | None = None, label: str | None = None,
                source: str | None = None, item: int | None = None) -> dict:
    """One prediction record (as written to a log) from the probabilities in CLASSES order."""
    p = [float(v) for v in probabilities]
    if len(p) != len(classes):
        raise ConfigError(f"request {request_id}: {len(p)} probabilities for {len(classes)} classes")
    k = int(np.argmax(p))
    return PredictionRecord(
        timestamp=timestamp or utc_now(), request_id=str(request_id or uuid.uuid4().hex), image_hash=image_hash,
        model_version=model_version, predicted=classes[k], confidence=p[k],
        probabilities={c: round(v, 6) for c, v in zip(classes, p)},
        embedding=[round(float(v), 5) for v in (embedding if embedding is not None else [])],
        image_stats={c: round(float(image_stats[c]), 4) for c in IMAGE_STAT_COLUMNS if c in image_stats},
        label=label, source=source, item=item).to_dict()


def prediction_record(*, request_id: str, image_sha256: str, predicted_class: str,
                      probabilities: Mapping[str, float], model_version: str,
                      embedding: Sequence[float] | None = None, image_stats: Mapping[str, float] | None = None,
                      timestamp: str | None = None, item: int | None = None) -> dict:
    """The same record from the serving side's values (a class -> probability mapping and the top class)."""
    if predicted_class not in probabilities:
        raise ConfigError(f"request {request_id}: predicted class {predicted_class!r} not among the probabilities")
    classes = list(probabilities)
    rec = make_record(probabilities=[probabilities[c] for c in classes], classes=classes,
                      image_stats=image_stats or {}, image_hash=image_sha256, model_version=model_version,
                      embedding=embedding, request_id=request_id, timestamp=timestamp, item=item)
    return {**rec, "predicted": predicted_class, "confidence": round(float(probabilities[predicted_class]), 6)}


RECORD_FIELDS = tuple(f.name for f in fields(PredictionRecord) if f.name not in ("label", "source", "item"))


class JsonlSink:
    """Append-only local JSONL file; one lock so concurrent requests never interleave lines.

    The file stays open between writes (opening and closing it per request was a measurable share of the
    transformer's CPU) and each write is one O_APPEND write() of whole lines, so processes sharing the file
    (`tailsynth serve --workers N`) do not interleave lines either. A file moved away or deleted (log rotation)
    is noticed by its inode and reopened at the path."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._ino: int | None = None
        self._fsync = bool(os.environ.get("TAILSYNTH_FSYNC_RECORDS"))

    def _open(self) -> int:
        try:
            if self._fd is not None and os.stat(self.path).st_ino == self._ino:
                return self._fd
        except FileNotFoundError:
            pass
        self.close()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._ino = os.fstat(self._fd).st_ino
        return self._fd

    def write(self, records: Iterable[dict]) -> int:
        records = list(records)
        if not records:
            return 0
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode("utf-8")
        with self._lock:
            fd = self._open()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self._fsync:
                os.fsync(fd)
        return len(records)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = self._ino = None

    def __del__(self):
        try:
            self.close()
        except OSError:
            pass

    def __str__(self) -> str:
        return str(self.path)


def parse_jsonl(text: str, where: str) -> list[dict]:
    """Prediction records from JSONL text, checked against the schema (errors name WHERE:line)."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}:{i}: not valid JSON ({e.msg})") from e
        out.append(PredictionRecord.from_dict(rec, f"{where}:{i}").to_dict())
    return out


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of one local JSONL log, checked against the schema (errors name file:line)."""
    return parse_jsonl(Path(path).read_text(encoding="utf-8"), str(path))


@dataclass
class Embedder:
    """PCA of penultimate features, fitted on the reference images of one model; calling it projects features."""

    mean: np.ndarray
    components: np.ndarray  # k x D
    explained_variance_ratio: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, dims: int = 5) -> Embedder:
        from sklearn.decomposition import PCA

        dims = int(min(dims, features.shape[0], features.shape[1]))
        pca = PCA(n_components=dims, svd_solver="full", random_state=0).fit(features.astype(np.float64))
        return cls(pca.mean_.astype(np.float32), pca.components_.astype(np.float32),
                   pca.explained_variance_ratio_.astype(np.float32))

    def transform(self, features: np.ndarray) -> np.ndarray:
        if features.shape[-1] != self.components.shape[1]:
            raise ConfigError(f"features have {features.shape[-1]} dims, the embedding projection expects "
                              f"{self.components.shape[1]} (was it fitted for another model?)")
        return (features.astype(np.float32) - self.mean) @ self.components.T

    __call__ = transform

    @property
    def dims(self) -> int:
        return int(self.components.shape[0])

    def save(self, model_dir: str | Path) -> Path:
        path = Path(model_dir) / MONITOR_DIR / EMBEDDING_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, mean=self.mean, components=self.components,
                 explained_variance_ratio=self.explained_variance_ratio)
        return path

    @classmethod
    def from_file(cls, path: str | Path) -> Embedder:
        path = Path(path)
        if not path.is_file():
            raise MissingInputError(f"{path}: no embedding projection")
        z = np.load(path)
        ratio = z["explained_variance_ratio"] if "explained_variance_ratio" in z else np.zeros(len(z["components"]))
        return cls(z["mean"].astype(np.float32), z["components"].astype(np.float32), ratio)

    @classmethod
    def load(cls, model_dir: str | Path) -> Embedder:
        path = Path(model_dir) / MONITOR_DIR / EMBEDDING_FILE
        if not path.is_file():
            raise MissingInputError(f"{path}: no embedding projection; build the reference first "
                                    f"(`tailsynth monitor reference --model {model_dir} --data ...`)")
        return cls.from_file(path)
