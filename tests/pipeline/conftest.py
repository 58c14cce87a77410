"""Helpers for the pipeline tests (components/ and pipelines/ are packages of the tailsynth distribution)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def artifact():
    """Make a KFP artifact object backed by a local path (what the executor hands a component)."""
    from kfp import dsl

    def make(kind: str, path: Path, **metadata):
        cls = {"dataset": dsl.Dataset, "model": dsl.Model, "artifact": dsl.Artifact, "metrics": dsl.Metrics}[kind]
        return cls(name=Path(path).name, uri=str(path), metadata=dict(metadata))

    return make
