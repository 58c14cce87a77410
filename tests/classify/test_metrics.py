"""Metrics against confusion matrices and values worked out by hand."""


import numpy as np
import pytest

from tailsynth.metrics import (
    bootstrap_ci,
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    one_vs_rest_auc,
    per_class_from_confusion,
)

CLASSES = ["MEL", "NV", "DF"]
Y = np.array([0, 0, 0, 1, 1, 2])
PRED = np.array([0, 0, 1, 1, 2, 2])


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(Y, PRED, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    pc = per_class_from_confusion(cm)
    assert pc["recall"].tolist() == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert pc["precision"].tolist() == pytest.approx([1.0, 1 / 2, 1 / 2])
    assert pc["f1"].tolist() == pytest.approx([0.8, 0.5, 2 / 3])
    assert pc["support"].tolist() == [3, 2, 1]


def _onehotish(pred, k=3, conf=0.8):
    p = np.full((len(pred), k), (1 - conf) / (k - 1))
    p[np.arange(len(pred)), pred] = conf
    return p


def test_classification_metrics_by_hand():
    m = classification_metrics(Y, _onehotish(PRED), CLASSES)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)  # 0.7222, not the accuracy
    assert m["per_class"]["DF"] == {"recall": 1.0, "precision": 0.5, "f1": pytest.approx(2 / 3),
                                    "auc": pytest.approx(m["per_class"]["DF"]["auc"]), "support": 1}
    assert m["rarest_class"] == "DF"
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # every prediction at confidence 0.8 with 4/6 right: ECE = |0.8 - 0.667|
    assert m["ece"] == pytest.approx(0.8 - 4 / 6)
    # DF scores: 0.8 for the 2 predicted-DF rows (one is DF), 0.1 otherwise -> AUC = 1 for the one positive
    # ranked above 4 of 5 negatives and tied with 1: (4 + 0.5) / 5
    assert m["per_class"]["DF"]["auc"] == pytest.approx(0.9)


def test_absent_class_is_none_not_zero():
    y = np.array([0, 0, 1, 1])
    probs = _onehotish(np.array([0, 1, 1, 1]))
    m = classification_metrics(y, probs, CLASSES)
    assert m["per_class"]["DF"]["recall"] is None and m["per_class"]["DF"]["auc"] is None
    assert m["per_class"]["DF"]["support"] == 0
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)  # over present classes only
    assert m["rarest_class"] == "MEL"


def test_never_predicted_class_has_f1_zero_and_precision_none():
    m = classification_metrics(np.array([0, 1, 2]), _onehotish(np.array([0, 1, 1])), CLASSES)
    assert m["per_class"]["DF"]["recall"] == 0.0
    assert m["per_class"]["DF"]["precision"] is None
    assert m["per_class"]["DF"]["f1"] == 0.0


def test_auc_perfect_and_inverted():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    assert one_vs_rest_auc(y, p).tolist() == [1.0, 1.0]
    assert one_vs_rest_auc(1 - y, p).tolist() == [0.0, 0.0]


def test_ece_two_bins_by_hand():
    # confidences 0.95 (right), 0.95 (wrong), 0.55 (right), 0.55 (right)
    p = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.45, 0.55]])
    y = np.array([0, 1, 0, 1])
    # bin of 0.95: 2 samples, acc 0.5 -> |0.5 - 0.95| = 0.45; bin of 0.55: acc 1 -> 0.45; weights 1/2 each
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.45)


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="expected N x 3"):
        classification_metrics(Y, np.zeros((6, 2)), CLASSES)
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_matrix(np.array([3]), np.array([0]), 3)


def test_bootstrap_interval_brackets_the_estimate():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    pred = np.where(rng.random(300) < 0.7, y, rng.integers(0, 3, 300))
    probs = _onehotish(pred)
    m = classification_metrics(y, probs, CLASSES)
    ci = bootstrap_ci(y, probs, CLASSES, n_boot=200, seed=1)
    for k in ("balanced_accuracy", "accuracy", "macro_auc"):
        lo, hi = ci[k]
        assert lo < m[k] < hi and hi - lo < 0.2
    lo, hi = ci["per_class_recall"]["DF"]
    assert lo < m["per_class"]["DF"]["recall"] < hi


def test_auc_matches_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 200)
    p = np.round(rng.random((200, 3)), 1)  # many ties
    ours = one_vs_rest_auc(y, p)
    for c in range(3):
        assert ours[c] == pytest.approx(roc_auc_score(y == c, p[:, c]))


# ---- paired comparisons (the augmentation experiment) -------------------------------------------------------------
from tailsynth.metrics import log_loss, mcnemar, paired_bootstrap, paired_metrics, pooled_recall


def test_log_loss_and_pooled_tail_recall_by_hand():
    probs = np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    assert log_loss(np.array([0, 1, 1]), probs) == pytest.approx(-(np.log(0.5) + np.log(0.1) + np.log(0.8)) / 3)
    assert log_loss(np.array([1]), np.array([[1.0, 0.0]])) == pytest.approx(-np.log(1e-12))  # clipped, finite
    y = np.array([0, 1, 1, 2, 2, 2, 3])
    pred = np.array([0, 1, 0, 2, 2, 0, 0])
    # Tail = classes 1 and 2: 4 of their 5 images right, pooled (not the mean of 1/2 and 2/3).
    assert pooled_recall(y, pred, [1, 2]) == pytest.approx(3 / 5)
    assert np.isnan(pooled_recall(y, pred, [4]))


def test_mcnemar_exact_binomial_on_discordant_images():
    ref = np.array([True] * 10 + [False] * 2 + [True] * 5 + [False] * 3)
    arm = np.array([False] * 10 + [True] * 2 + [True] * 5 + [False] * 3)
    t = mcnemar(ref, arm)
    assert (t["ref_only_correct"], t["arm_only_correct"], t["n"]) == (10, 2, 20)
    # Two-sided exact: 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096.
    assert t["p_value"] == pytest.approx(2 * 79 / 4096)
    assert mcnemar(ref, ref)["p_value"] == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        mcnemar(ref, arm[:-1])


def _onehot(pred, k):
    p = np.full((len(pred), k), 0.01)
    p[np.arange(len(pred)), pred] = 1.0
    return p / p.sum(1, keepdims=True)


def test_paired_bootstrap_delta_and_interval():
    rng = np.random.default_rng(0)
    units = []
    for fold in range(3):
        y = rng.integers(0, 3, 300)
        ref = np.where(rng.random(300) < 0.6, y, (y + 1) % 3)  # about 60% right
        better = np.where(rng.random(300) < 0.5, y, ref)  # right on about 80%
        units.append({"group": f"fold{fold}", "y": y, "probs_ref": _onehot(ref, 3), "probs_arm": _onehot(better, 3)})
    out = paired_bootstrap(units, 3, [2], n_boot=200, seed=0)
    d = out["balanced_accuracy"]
    want = np.mean([paired_metrics(u["y"], u["probs_arm"], 3, [2])["balanced_accuracy"]
                    - paired_metrics(u["y"], u["probs_ref"], 3, [2])["balanced_accuracy"] for u in units])
    assert d["delta"] == pytest.approx(want) and 0.15 < want < 0.25
    assert d["ci95"][0] > 0.1 and d["ci95"][0] < want < d["ci95"][1] < 0.3
    assert out["log_loss"]["delta"] < 0  # the better arm is more often right and confident
    # An arm identical to the reference: Δ = 0 with a zero-width interval.
    same = [{**u, "probs_arm": u["probs_ref"]} for u in units]
    z = paired_bootstrap(same, 3, [2], n_boot=50)["balanced_accuracy"]
    assert z["delta"] == 0 and z["ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="different image sets"):
        short = {k: (v[:100] if k != "group" else "fold0") for k, v in units[1].items()}
        paired_bootstrap([units[0], short], 3, [2], n_boot=5)
