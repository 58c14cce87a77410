"""The prediction record: one typed schema, one JSONL sink and one embedding projection, shared by the serving
transformer (which writes records) and the monitor (which writes them in replays and reads them all).

No image bytes ever leave the service: a record holds the image's SHA-256, a few image statistics, the class
probabilities and a low-dimensional embedding (PCA of the classifier's penultimate features, fitted on the
monitoring reference and stored beside the model in MODEL_DIR/monitor/embedding.npz).
"""

from __future__ import annotations

import errno
import fcntl
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
MONITOR_DIR = "monitor"  # beside the classifier's weights (`hashing.MODEL_FILE`)
EMBEDDING_FILE = "embedding.npz"
# Names an earlier serving-side record used for two fields; logs written then are still read.
_OLD_NAMES = {"image_sha256": "image_hash", "predicted_class": "predicted"}


# ---- per-image facts: serving records them, monitoring compares them with its reference -------------------------
def image_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Vectorised statistics (IMAGE_STAT_COLUMNS) of N x H x W x 3 uint8 images (or one H x W x 3 image -> scalars)."""
    single = images.ndim == 3
    x = (images[None] if single else images).astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    mx, mn = x.max(axis=-1), x.min(axis=-1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    # Mean absolute Laplacian of luma: the high-frequency content that blur (a soft lens, a lower-resolution
    # camera) removes while leaving brightness and global contrast almost unchanged.
    if luma.shape[1] > 2 and luma.shape[2] > 2:
        lap = (4 * luma[:, 1:-1, 1:-1] - luma[:, :-2, 1:-1] - luma[:, 2:, 1:-1] - luma[:, 1:-1, :-2]
               - luma[:, 1:-1, 2:])
        sharp = np.abs(lap).mean(axis=(1, 2))
    else:
        sharp = np.zeros(len(x), np.float32)
    out = {
        "brightness": luma.mean(axis=(1, 2)),
        "contrast": luma.std(axis=(1, 2)),
        "sharpness": sharp,
        "saturation": sat.mean(axis=(1, 2)),
        "mean_r": r.mean(axis=(1, 2)),
        "mean_g": g.mean(axis=(1, 2)),
        "mean_b": b.mean(axis=(1, 2)),
        "height": np.full(len(x), x.shape[1], np.float32),
        "width": np.full(len(x), x.shape[2], np.float32),
    }
    if single:
        return {k: float(v[0]) for k, v in out.items()}
    return out


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


class RecordWriteError(OSError):
    """A write of prediction records failed and was rolled back: the file holds none of its lines.

    Carries the errno of the underlying failure (ENOSPC, EFBIG, EIO, ...) and how many records were dropped."""

    def __init__(self, path: Path, cause: OSError, records: int, rolled_back: bool):
        self.path, self.cause, self.records, self.rolled_back = path, cause, records, rolled_back
        name = errno.errorcode.get(cause.errno or 0, "unknown errno")
        self.errno_name = name
        state = "rolled back" if rolled_back else "NOT rolled back (the next write starts a new line)"
        super().__init__(cause.errno, f"{path}: writing {records} record(s) failed with {name} "
                                      f"({cause.strerror or cause}); {state}")


@dataclass
class SinkStats:
    """Counters of one sink (one process): what was written, what failed and was dropped."""

    written_writes: int = 0
    written_records: int = 0
    failed_writes: int = 0
    failed_records: int = 0
    torn_tails_closed: int = 0  # a line left without its newline (crash, older version) was ended before a write
    last_error: str | None = None


# Writes in a row that must succeed before a burst of failures counts as over. On a nearly full disk a small
# record can still fit where a larger one did not, so single successes between failures are no recovery (and
# would make every such success a new burst, and a new log line).
RECOVERY_WRITES = 10
LEDGER_SUFFIX = ".write-failures"
_LEDGER_BYTES = 512  # fixed size, allocated while there is space: later updates overwrite it in place


def ledger_path(records: str | Path) -> Path:
    """The failure ledger beside a records file (not *.jsonl: folder readers must not take it for a log)."""
    return Path(f"{records}{LEDGER_SUFFIX}")


def read_ledger(records: str | Path) -> dict | None:
    """The failure ledger of a records file ({'failed_writes', 'failed_records', ...}), None when there is none."""
    path = ledger_path(records)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not a tailsynth write-failure ledger ({e.msg})") from e
    if not isinstance(data, dict) or "failed_writes" not in data:
        raise DataError(f"{path}: not a tailsynth write-failure ledger (no 'failed_writes')")
    return data


class FailureLedger:
    """Failed record writes counted in a small file beside the records, shared by every process writing them.

    It outlives the server (the ensemble's postprocess model has no log that does) and stays writable on a full
    filesystem: its blocks are allocated when it is created and every update rewrites them in place under an
    exclusive lock, so an update never needs new space."""

    def __init__(self, records: str | Path):
        self.path = ledger_path(records)
        self._fd: int | None = None
        self.error: str | None = None  # why the ledger could not be opened or updated, if it could not

    def open(self) -> bool:
        if self._fd is not None:
            return True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            self.error = f"{self.path}: {e.strerror}"
            return False
        try:
            with _locked(fd):
                if os.fstat(fd).st_size < _LEDGER_BYTES:
                    os.posix_fallocate(fd, 0, _LEDGER_BYTES)
                    if not self._read(fd):
                        self._store(fd, {"failed_writes": 0, "failed_records": 0})
        except OSError as e:
            os.close(fd)
            self.error = f"{self.path}: {e.strerror}"
            return False
        self._fd, self.error = fd, None
        return True

    @staticmethod
    def _read(fd: int) -> dict:
        raw = os.pread(fd, _LEDGER_BYTES, 0).rstrip(b"\0 \n")
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _store(fd: int, data: dict) -> None:
        body = json.dumps(data, separators=(",", ":"))
        if len(body) > _LEDGER_BYTES - 1:  # only the free-text message can grow
            data = {**data, "last_error": str(data.get("last_error", ""))[:120]}
            body = json.dumps(data, separators=(",", ":"))
        raw = body.encode().ljust(_LEDGER_BYTES - 1) + b"\n"
        if os.pwrite(fd, raw, 0) != len(raw):
            raise OSError(errno.EIO, "short write of the failure ledger")

    def update(self, change) -> bool:
        """Apply CHANGE (a function of the current dict returning the new one) under the ledger's lock."""
        if not self.open():
            return False
        try:
            with _locked(self._fd):
                self._store(self._fd, change(self._read(self._fd)))
        except OSError as e:
            self.error = f"{self.path}: {e.strerror}"
            return False
        return True

    def add_failure(self, err: RecordWriteError) -> bool:
        now = utc_now()

        def change(d: dict) -> dict:
            return {**d, "failed_writes": int(d.get("failed_writes", 0)) + 1,
                    "failed_records": int(d.get("failed_records", 0)) + err.records,
                    "first_failure_at": d.get("first_failure_at") or now, "last_failure_at": now,
                    "last_errno": err.errno_name, "last_error": err.cause.strerror or str(err.cause)}

        return self.update(change)

    def mark_recovered(self) -> bool:
        return self.update(lambda d: {**d, "recovered_at": utc_now()})

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _locked:
    """An exclusive flock on FD for a with-block. flock (not fcntl/lockf) locks belong to the open file
    description: closing another descriptor of the same file in this process does not drop them."""

    def __init__(self, fd: int):
        self.fd = fd

    def __enter__(self):
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self.fd

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)


class JsonlSink:
    """Append-only local JSONL file; one lock so concurrent requests never interleave lines.

    The file stays open between writes (opening and closing it per request was a measurable share of the
    transformer's CPU) and each write is one O_APPEND write() of whole lines, so processes sharing the file
    (`tailsynth serve --workers N`) do not interleave lines either. A file moved away or deleted (log rotation)
    is noticed by its inode and reopened at the path.

    A write is all-or-nothing: under an exclusive flock shared by every process writing the file, a write that
    fails part-way (ENOSPC, EFBIG, EIO, ...) is cut back to the length the file had before it, and the failure is
    counted (`stats`, and with `ledger=True` the failure ledger beside the file) and raised as RecordWriteError.
    A line left without its newline by a crash (or by a version without this rollback) is ended before the next
    write, so new records always start on a clean line; readers skip and count that fragment."""

    def __init__(self, path: str | Path, ledger: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._ino: int | None = None
        self._end: int | None = None  # the file's length after this sink's last write: its tail is a newline
        self._fsync = bool(os.environ.get("TAILSYNTH_FSYNC_RECORDS"))
        self.stats = SinkStats()
        self.ledger = FailureLedger(self.path) if ledger else None
        self._ok_streak: int | None = None  # successful writes since the last failure (None: no failure yet)
        if self.ledger is not None:
            self.ledger.open()  # while there is space, so that it can count failures on a full disk later

    def _open(self) -> int:
        try:
            if self._fd is not None and os.stat(self.path).st_ino == self._ino:
                return self._fd
        except FileNotFoundError:
            pass
        self.close()
        # Read access only to look at the last byte before a write (a torn tail); writes still append.
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self._ino = os.fstat(self._fd).st_ino
        return self._fd

    def _needs_newline(self, fd: int, size: int) -> bool:
        """Whether the file ends inside a line (only checked when someone else wrote since this sink did)."""
        if size == 0 or size == self._end:
            return False
        return os.pread(fd, 1, size - 1) != b"\n"

    def _append(self, fd: int, data: bytes, records: int) -> None:
        """All of DATA at the end of the file, or none of it (cut back) and a RecordWriteError."""
        start = os.fstat(fd).st_size
        if self._needs_newline(fd, start):
            data = b"\n" + data
            self.stats.torn_tails_closed += 1
        view = memoryview(data)
        try:
            while view:
                n = os.write(fd, view)
                if n <= 0:  # a regular file never accepts 0 bytes of a non-empty write without an error
                    raise OSError(errno.EIO, "write accepted no bytes")
                view = view[n:]
            if self._fsync:
                os.fsync(fd)
        except OSError as e:
            raise RecordWriteError(self.path, e, records, self._roll_back(fd, start)) from e
        self._end = start + len(data)

    def _roll_back(self, fd: int, length: int) -> bool:
        try:
            os.ftruncate(fd, length)  # shrinking needs no space, so this works on a full filesystem
        except OSError:
            self._end = None  # the tail is unknown now: the next write checks it
            return False
        self._end = length
        return True

    def write(self, records: Iterable[dict]) -> int:
        records = list(records)
        if not records:
            return 0
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode("utf-8")
        with self._lock:
            try:
                fd = self._open()
                with _locked(fd):
                    self._append(fd, data, len(records))
            except RecordWriteError as e:
                self._count_failure(e)
                raise
            except OSError as e:  # the file could not even be opened or locked: nothing was written
                err = RecordWriteError(self.path, e, len(records), rolled_back=True)
                self._count_failure(err)
                raise err from e
            self.stats.written_writes += 1
            self.stats.written_records += len(records)
            if self._ok_streak is not None:
                self._ok_streak += 1
                if self._ok_streak == RECOVERY_WRITES:
                    self._ok_streak = None
                    if self.ledger is not None:
                        self.ledger.mark_recovered()
        return len(records)

    def _count_failure(self, err: RecordWriteError) -> None:
        self.stats.failed_writes += 1
        self.stats.failed_records += err.records
        self.stats.last_error = str(err)
        self._ok_streak = 0
        if self.ledger is not None:
            self.ledger.add_failure(err)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = self._ino = self._end = None

    def __del__(self):
        try:
            self.close()
            if self.ledger is not None:
                self.ledger.close()
        except (OSError, AttributeError):
            pass

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class SkippedLine:
    where: str  # file:line
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


class RecordLog(list):
    """Records read from one or more logs (a list of record dicts) and the lines that were skipped.

    A torn write (a line cut short by a full disk or a crash, or a later line appended onto it) is not valid JSON:
    it is skipped and counted, so one bad line never hides every good record of a log."""

    def __init__(self, records: Iterable[dict] = (), skipped: Iterable[SkippedLine] = ()):
        super().__init__(records)
        self.skipped: list[SkippedLine] = list(skipped)

    def extend_log(self, other: RecordLog) -> None:
        self.extend(other)
        self.skipped.extend(getattr(other, "skipped", []))


def parse_jsonl(text: str | bytes, where: str) -> RecordLog:
    """Prediction records from JSONL text, checked against the schema (errors name WHERE:line).

    A line that is not valid JSON (or not UTF-8) is skipped and listed in `.skipped`: that is what a torn write
    leaves. A line that is valid JSON but not a valid record still raises DataError naming WHERE:line, since that
    is a writer or a file the user must know about, not a fault of the disk. So does a log with no readable
    record and several bad lines (probably not a prediction log)."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    out = RecordLog()
    for i, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            out.skipped.append(SkippedLine(f"{where}:{i}", "not UTF-8 text (a torn write?)"))
            continue
        except json.JSONDecodeError as e:
            out.skipped.append(SkippedLine(f"{where}:{i}", f"not valid JSON ({e.msg}; a torn write?)"))
            continue
        out.append(PredictionRecord.from_dict(rec, f"{where}:{i}").to_dict())
    # Every line bad is not a torn write but the wrong file; a lone bad line may be the one record of a log whose
    # only write was torn (a crash on the first request), so that alone is skipped like any other.
    if len(out.skipped) > 1 and not out:
        raise DataError(f"{where}: no readable prediction record; {len(out.skipped)} bad line(s), the first "
                        f"{out.skipped[0]}")
    return out


def read_jsonl(path: str | Path) -> RecordLog:
    """The records of one local JSONL log, checked against the schema (errors name file:line; torn lines are
    skipped and listed in `.skipped`)."""
    return parse_jsonl(Path(path).read_bytes(), str(path))


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
