"""Content hashes that name versions (torch-free, so light processes such as the transformer can use them)."""

from __future__ import annotations

import hashlib
from pathlib import Path

MODEL_FILE = "model.pt"  # a classifier model folder's weights (`classify.folders`); its version is their hash


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks (files may be large archives)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_revision(path: str | Path) -> str:
    """The project's one data revision: "sha256:" + the sha256 of a file's bytes, or of a folder's sorted relative
    paths and file digests (DVC's own metadata skipped).

    Independent of timestamps and of where the data lives, so it keys caches (KFP's, which cannot see into external
    data), names the data a classifier was trained on (model.pt) and is what the pipelines receive when no DVC
    revision is given."""
    from .errors import DataError, MissingInputError

    p = Path(path)
    if p.is_file():
        return "sha256:" + file_digest(p)
    if not p.is_dir():
        raise MissingInputError(f"{p}: no such file or folder to hash")
    files = sorted((q for q in p.rglob("*") if q.is_file() and ".dvc" not in q.relative_to(p).parts[:1]),
                   key=lambda q: q.relative_to(p).as_posix())
    if not files:
        raise DataError(f"{p}: nothing to hash (empty folder)")
    h = hashlib.sha256()
    for q in files:
        h.update(q.relative_to(p).as_posix().encode() + b"\0" + file_digest(q).encode() + b"\n")
    return "sha256:" + h.hexdigest()


def model_version(model_dir: str | Path) -> str:
    """Content hash of the classifier checkpoint: the same weights always get the same version string."""
    path = Path(model_dir)
    path = path / MODEL_FILE if path.is_dir() else path
    return file_digest(path)[:12]
