"""The classifier stage's folders: evaluation.json carries its schema, older records read as version 0, another
schema or a record without the report's fields is an error naming the file and the expected schema."""

import json

import pytest

from tailsynth.classify.folders import Evaluation, TrainedClassifier
from tailsynth.errors import DataError, MissingInputError

EVALUATION_SCHEMA = Evaluation.schema()
METRICS = {"balanced_accuracy": 0.5, "per_class": {"DF": {"recall": 0.5}}}


def test_evaluation_round_trip_and_version_0(tmp_path):
    ev = Evaluation(tmp_path / "ev")
    ev.write(METRICS, "real", "test")
    rec = Evaluation.read(ev.root)
    assert rec["schema"] == EVALUATION_SCHEMA and rec["arm"] == "real" and rec["split"] == "test"
    del rec["schema"]
    ev.record_path.write_text(json.dumps(rec))
    assert Evaluation.read(ev.record_path)["arm"] == "real"


def test_foreign_or_incomplete_evaluation_names_file_and_schema(tmp_path):
    ev = Evaluation(tmp_path / "ev")
    ev.write(METRICS, "real", "test")
    ev.record_path.write_text(json.dumps({"schema": "tailsynth.selection/1", **METRICS, "arm": "x"}))
    with pytest.raises(DataError, match=rf"evaluation.json: schema 'tailsynth.selection/1'; expected an evaluation \({EVALUATION_SCHEMA}"):
        Evaluation.read(ev.root)
    ev.record_path.write_text(json.dumps(METRICS))
    with pytest.raises(DataError, match=rf"evaluation.json: missing field 'arm'; expected an evaluation \({EVALUATION_SCHEMA}"):
        Evaluation.read(ev.root)
    with pytest.raises(DataError, match=r"evaluation.json: evaluation not found"):
        Evaluation.read(tmp_path / "elsewhere")


def test_trained_classifier_folder(tmp_path):
    tc = TrainedClassifier(tmp_path)
    assert not tc.has_model() and not tc.is_evaluated() and tc.metrics() is None
    tc.write_config({"loss": "ce"})
    tc.write_history([{"epoch": 1}])
    assert tc.config_path.name == "config.yaml" and json.loads(tc.history_path.read_text()) == [{"epoch": 1}]
    from tailsynth.classify.folders import read_metrics, write_metrics

    write_metrics(tmp_path, METRICS)
    assert tc.is_evaluated() and tc.metrics() == METRICS
    with pytest.raises(MissingInputError, match=r"test_metrics.json: no metrics"):
        read_metrics(tmp_path, "test_")
