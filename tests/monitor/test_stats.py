"""Per-class drift tests on synthetic tables with known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tailsynth.monitor.stats import DriftSettings, evaluate_window, holm

CLASSES = ["NV", "MEL", "DF"]


def _frame(rng, counts, shift=None, labels=True):
    rows = []
    for c, n in counts.items():
        for _ in range(n):
            b = rng.normal(120, 15) + (shift[1] if shift and shift[0] == c else 0)
            rows.append({"predicted": c, "label": c if labels else None, "confidence": rng.beta(5, 2),
                         "brightness": b, "emb_0": rng.normal(), "emb_1": rng.normal(), "height": 28.0})
    return pd.DataFrame(rows)


def test_holm_matches_definition():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    assert holm(p).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_iid_windows_flag_rarely_and_shift_is_found():
    rng = np.random.default_rng(0)
    counts = {"NV": 400, "MEL": 80, "DF": 25}
    ref = _frame(rng, counts)
    false = sum(bool(evaluate_window(ref, _frame(rng, counts), CLASSES)["flagged"]) for _ in range(40))
    assert false <= 2  # family-wise alpha 0.01 per window
    res = evaluate_window(ref, _frame(rng, counts, shift=("DF", 25)), CLASSES)
    assert res["flagged"] == ["DF"] and res["classes"]["DF"]["drifted_columns"] == ["brightness"]
    assert res["classes"]["DF"]["image_drift"] and not res["classes"]["DF"]["share_drift"]
    assert "height" not in res["classes"]["DF"]["tests"]  # a constant on both sides is not a test


def test_share_and_small_counts():
    rng = np.random.default_rng(1)
    ref = _frame(rng, {"NV": 400, "MEL": 80, "DF": 25})
    res = evaluate_window(ref, _frame(rng, {"NV": 400, "MEL": 80, "DF": 90}), CLASSES)
    assert "DF" in res["flagged"] and res["classes"]["DF"]["share_drift"]
    few = evaluate_window(ref, _frame(rng, {"NV": 400, "MEL": 80, "DF": 4}, shift=("DF", 60)), CLASSES)
    df = few["classes"]["DF"]
    # 4 rows: no column test is run (the brightness shift goes unseen), but the share drop itself is significant
    assert set(df["tests"]) == {"share"} and df["drifted_columns"] == [] and df["share_drift"]
    same = evaluate_window(ref, _frame(rng, {"NV": 400, "MEL": 80, "DF": 20}, shift=("DF", 60)), CLASSES,
                           DriftSettings(min_samples=30))
    assert same["classes"]["DF"]["status"] == "insufficient" and same["flagged"] == []


def test_group_by_predicted_without_labels_and_errors():
    rng = np.random.default_rng(2)
    ref = _frame(rng, {"NV": 200, "MEL": 50, "DF": 30}, labels=False)
    cur = _frame(rng, {"NV": 200, "MEL": 50, "DF": 30}, labels=False)
    assert evaluate_window(ref, cur, CLASSES)["group_by"] == "predicted"
    with pytest.raises(ValueError, match="needs a label"):
        evaluate_window(ref, cur, CLASSES, DriftSettings(group_by="label"))


def test_recall_drop_on_labelled_feedback():
    rng = np.random.default_rng(3)
    ref = _frame(rng, {"NV": 300, "MEL": 60, "DF": 40})
    cur = _frame(rng, {"NV": 300, "MEL": 60, "DF": 40})
    cur.loc[cur.index[cur["label"] == "DF"][:30], "predicted"] = "NV"  # the model now misses DF
    res = evaluate_window(ref, cur, CLASSES)
    df = res["classes"]["DF"]
    assert df["recall_ref"] == 1.0 and df["recall_cur"] == 0.25 and df["recall_drop"]
    assert "DF" in res["flagged"]
