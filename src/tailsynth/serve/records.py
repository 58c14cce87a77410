"""The serving side's names for the one prediction record, sink and projection (`tailsynth.predictions`)."""

from __future__ import annotations

from ..predictions import RECORD_FIELDS, Embedder, JsonlSink, prediction_record
from ..predictions import read_jsonl as read_records

Projection = Embedder.from_file  # the repository's embedding.npz -> a callable projection of features

__all__ = ["RECORD_FIELDS", "JsonlSink", "Projection", "prediction_record", "read_records"]
