"""The classifier stage's output folders and the one place that knows their files.

A trained classifier (`train_classifier`):

    MODEL_DIR/MODEL_FILE      the selected weights and `ClassifierMeta` (read and written in `metadata`)
    MODEL_DIR/metrics.json    the val-split evaluation of the selected model (`evaluate.write_evaluation`)
    MODEL_DIR/config.yaml     the resolved training config
    MODEL_DIR/history.json    per-epoch loss and val metrics
    MODEL_DIR/checkpoint.pt   the last epoch, for resume

An evaluation (`evaluate_model`, and the pipeline's evaluate stage):

    OUT/metrics.json          the metrics of one split (PREFIX-metrics.json for a prefixed report)
    OUT/evaluation.json       the pipeline's record: those metrics plus `arm`, `split` and the schema

Schema versions: evaluation.json carries `schema` (`tailsynth.evaluation/1`); one without it (written before) is
read as version 0 when it has the fields the report needs; another schema is a `DataError` naming the file and
the expected schema. metrics.json keeps the body `tailsynth.metrics.classification_metrics` defines.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError, MissingInputError
from ..hashing import MODEL_FILE
from ..stagefolder import StageFolder

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.json"
CHECKPOINT_FILE = "checkpoint.pt"
EVALUATION_FILE = "evaluation.json"
EVALUATION_FIELDS = ("arm", "balanced_accuracy", "per_class")


def metrics_path(folder: str | Path, prefix: str = "") -> Path:
    return Path(folder) / f"{prefix}{METRICS_FILE}"


def write_metrics(folder: str | Path, metrics: dict, prefix: str = "") -> Path:
    path = metrics_path(folder, prefix)
    path.write_text(json.dumps(metrics, indent=1))
    return path


def read_metrics(folder: str | Path, prefix: str = "") -> dict:
    path = metrics_path(folder, prefix)
    if not path.is_file():
        raise MissingInputError(f"{path}: no metrics (expected from `tailsynth train classifier` or `evaluate`)")
    return json.loads(path.read_text())


class TrainedClassifier:
    """A classifier model folder written by `train_classifier`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    model_path = property(lambda self: self.root / MODEL_FILE)
    metrics_path = property(lambda self: metrics_path(self.root))
    config_path = property(lambda self: self.root / CONFIG_FILE)
    history_path = property(lambda self: self.root / HISTORY_FILE)
    checkpoint_path = property(lambda self: self.root / CHECKPOINT_FILE)

    def has_model(self) -> bool:
        return self.model_path.is_file()

    def is_evaluated(self) -> bool:
        """Training finished: the selected model's val metrics are written (the last file training writes)."""
        return self.metrics_path.is_file()

    def metrics(self) -> dict | None:
        """The val metrics beside the model, None when there are none."""
        return read_metrics(self.root) if self.is_evaluated() else None

    def write_config(self, resolved: dict) -> Path:
        import yaml

        self.config_path.write_text(yaml.safe_dump(resolved, sort_keys=False))
        return self.config_path

    def write_history(self, history: list) -> Path:
        self.history_path.write_text(json.dumps(history, indent=1))
        return self.history_path


class Evaluation(StageFolder):
    """An evaluation folder of the pipeline's evaluate stage (`evaluation.json` beside the metrics)."""

    SCHEMA_NAME, SCHEMA_VERSION, RECORD = "tailsynth.evaluation", 1, EVALUATION_FILE
    WRITER, KIND = "the pipeline's evaluate stage", "evaluation"

    def write(self, metrics: dict, arm: str, split: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        rec = {"schema": self.schema(), **metrics, "arm": arm, "split": split}
        self.record_path.write_text(json.dumps(rec, indent=2, sort_keys=True, default=str))
        return self.record_path

    @classmethod
    def read(cls, path: str | Path) -> dict:
        """PATH: an evaluation folder or its evaluation.json."""
        p = Path(path)
        p = p / EVALUATION_FILE if p.is_dir() or p.suffix != ".json" else p
        if not p.is_file():
            raise DataError(f"{p}: evaluation not found; {cls.expected()}")
        ev = cls.read_record(p)
        for key in EVALUATION_FIELDS:
            if key not in ev:
                raise DataError(f"{p}: missing field {key!r}; {cls.expected()}")
        return ev
