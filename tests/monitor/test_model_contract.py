"""The classifier model folder's metadata contract between the trainer and the monitor: a model trained by
`train_classifier` carries its training class counts, and the monitor, told to derive the tail from shares
(tail.share_below), picks the tail classes from them (not from the reference labels, which here are balanced and
would give no tail at all); told nothing, it takes tailsynth.data.classes.TAIL_CLASSES."""

from __future__ import annotations

import pytest
import torch
from tailsynth_testdata import make_npz

from tailsynth.classify.metadata import ClassifierMeta, read_meta
from tailsynth.classify.train import train_classifier
from tailsynth.data.errors import DataError
from tailsynth.monitor.reference import build_reference
from tailsynth.monitor.report import build_window_report

# npz label order: AK, BCC, BKL, DF, MEL, NV, VASC. Training shares of AK, DF and VASC are under 5 %;
# the reference (val) split is balanced.
TRAIN = [4, 30, 30, 3, 30, 60, 3]
VAL = [6] * 7


def test_monitor_picks_tail_classes_from_the_trained_models_counts(tmp_path):
    torch.set_num_threads(1)
    data = make_npz(tmp_path / "lt.npz", counts={"train": TRAIN, "val": VAL})
    model = tmp_path / "model"
    train_classifier(data, model, backbone="test_resnet", loss="ce", epochs=1, seed=0, threads=1, batch_size=32,
                     quiet=True, write_reports=False)
    meta = read_meta(model)
    assert meta.train_class_counts == {"AK": 4, "BCC": 30, "BKL": 30, "DF": 3, "MEL": 30, "NV": 60, "VASC": 3}

    build_reference(model, data, split="val", dims=3)
    reference = model / "monitor" / "reference.jsonl"
    # With tail.share_below set, the tail is what is rare in the model's training data...
    policy = tmp_path / "policy.yaml"
    policy.write_text("tail:\n  share_below: 0.05\n")
    summary = build_window_report(reference, reference, tmp_path / "window", config=policy, evidently=False)
    assert summary["tail_basis"].startswith("model training class counts"), summary["tail_basis"]
    assert summary["tail_classes"] == ["AK", "DF", "VASC"]
    # ... and without a tail setting, the platform's vocabulary (tailsynth.data.classes.TAIL_CLASSES).
    summary = build_window_report(reference, reference, tmp_path / "window-2", evidently=False)
    assert summary["tail_basis"] == "tailsynth.data.classes.TAIL_CLASSES"
    assert summary["tail_classes"] == ["AK", "DF", "VASC"]  # in the model's class order


def test_metadata_schema_rejects_unknown_and_missing_keys(tmp_path):
    good = ClassifierMeta(backbone="test_resnet", classes=["NV", "DF"], resolution=28).to_checkpoint({})
    assert ClassifierMeta.from_checkpoint(good, "m.pt").classes == ["NV", "DF"]
    with pytest.raises(DataError, match=r"m.pt: unknown metadata key\(s\) class_counts"):
        ClassifierMeta.from_checkpoint({**good, "class_counts": {"NV": 1}}, "m.pt")
    with pytest.raises(DataError, match="m.pt: classifier metadata lacks resolution"):
        ClassifierMeta.from_checkpoint({k: v for k, v in good.items() if k != "resolution"}, "m.pt")
    # Models saved before the schema kept the counts in their training config; they still count.
    legacy = {**good, "config": {"class_counts_train": {"NV": 9, "DF": 1}}}
    del legacy["train_class_counts"]
    assert ClassifierMeta.from_checkpoint(legacy, "m.pt").train_class_counts == {"NV": 9, "DF": 1}
