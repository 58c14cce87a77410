"""Helpers for the pipeline tests: the repository root on sys.path (components/ and pipelines/ live there)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def artifact():
    """Make a KFP artifact object backed by a local path (what the executor hands a component)."""
    from kfp import dsl

    def make(kind: str, path: Path, **metadata):
        cls = {"dataset": dsl.Dataset, "model": dsl.Model, "artifact": dsl.Artifact, "metrics": dsl.Metrics}[kind]
        return cls(name=Path(path).name, uri=str(path), metadata=dict(metadata))

    return make
