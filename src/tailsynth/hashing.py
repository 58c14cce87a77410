"""Content hashes that name versions (torch-free, so light processes such as the transformer can use them)."""

from __future__ import annotations

import hashlib
from pathlib import Path

MODEL_FILE = "model.pt"


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks (files may be large archives)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_version(model_dir: str | Path) -> str:
    """Content hash of the classifier checkpoint: the same weights always get the same version string."""
    path = Path(model_dir)
    path = path / MODEL_FILE if path.is_dir() else path
    return file_digest(path)[:12]
