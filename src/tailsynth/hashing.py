"""Content hashes that name versions (torch-free, so light processes such as the transformer can use them)."""

from __future__ import annotations

import hashlib
from pathlib import Path

MODEL_FILE = "model.pt"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_version(model_dir: str | Path) -> str:
    """Content hash of the classifier checkpoint: the same weights always get the same version string."""
    path = Path(model_dir)
    path = path / MODEL_FILE if path.is_dir() else path
    return file_sha256(path)[:12]
