"""Classification metrics for the long tail: per-class recall first, accuracy second.

Balanced multi-class accuracy (mean per-class recall) is the ISIC 2019 challenge metric and the project's metric of record.
Everything here is numpy, so OOD/monitor code can use it without torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .errors import ConfigError


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so large logits do not overflow."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """C x C counts, rows = true class, columns = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ConfigError(f"y_true has shape {y_true.shape} but y_pred has {y_pred.shape}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ConfigError(f"{name} holds class indices outside 0..{num_classes - 1}")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """recall, precision, f1, support per class. Undefined ratios (0/0) are NaN, not 0, so they can't pass as a score."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        # A class that is present but never predicted has precision 0 for F1 purposes (sklearn's zero_division=0).
        p0 = np.where(predicted > 0, precision, 0.0)
        r0 = np.where(support > 0, recall, np.nan)
        f1 = np.where(p0 + r0 > 0, 2 * p0 * r0 / (p0 + r0), np.where(support > 0, 0.0, np.nan))
    return {"recall": recall, "precision": precision, "f1": f1, "support": support.astype(np.int64)}


def balanced_accuracy_from_confusion(cm: np.ndarray) -> float:
    rec = per_class_from_confusion(cm)["recall"]
    rec = rec[~np.isnan(rec)]
    return float(rec.mean()) if len(rec) else float("nan")


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank."""
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    start = np.cumsum(counts) - counts
    return (start + (counts + 1) / 2.0)[inv]


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half); NaN without both positives and negatives.

    Numpy only: scikit-learn's roc_auc_score spends most of its time validating input, which dominates bootstrap loops.
    """
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _average_ranks(np.asarray(scores, dtype=np.float64))
    return float((r[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def one_vs_rest_auc(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """ROC AUC of each class against the rest; NaN for a class with no positives or no negatives."""
    y_true = np.asarray(y_true)
    return np.array([binary_auc(y_true == c, probs[:, c]) for c in range(probs.shape[1])])


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins (Guo et al. 2017)."""
    y_true = np.asarray(y_true)
    if len(y_true) == 0:
        return float("nan")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    # Bin i holds confidences in (i/n, (i+1)/n]; a confidence of exactly 0 goes to bin 0.
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def _nanmean(a: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    a = a[~np.isnan(a)]
    return float(a.mean()) if len(a) else float("nan")


def _f(x) -> float | None:
    """JSON-safe float: NaN becomes None."""
    x = float(x)
    return None if math.isnan(x) else x


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str],
                           n_bins: int = 15) -> dict:
    """The body of a classifier's metrics file (`classify.folders.METRICS_FILE`): headline numbers, per_class dict
    keyed by class name, confusion matrix."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise ConfigError(f"probs has shape {probs.shape}, expected N x {len(classes)} (one column per class)")
    if len(y_true) != len(probs):
        raise ConfigError(f"{len(y_true)} labels but {len(probs)} rows of probabilities")
    pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, pred, len(classes))
    pc = per_class_from_confusion(cm)
    auc = one_vs_rest_auc(y_true, probs)
    per_class = {
        c: {"recall": _f(pc["recall"][i]), "precision": _f(pc["precision"][i]), "f1": _f(pc["f1"][i]),
            "auc": _f(auc[i]), "support": int(pc["support"][i])}
        for i, c in enumerate(classes)
    }
    present = pc["support"] > 0
    rarest = None
    if present.any():
        rarest = classes[int(np.argmin(np.where(present, pc["support"], np.iinfo(np.int64).max)))]
    return {
        "n": len(y_true),
        "balanced_accuracy": _f(balanced_accuracy_from_confusion(cm)),
        "accuracy": _f((pred == y_true).mean() if len(y_true) else float("nan")),
        "macro_auc": _f(_nanmean(auc)),
        "macro_f1": _f(_nanmean(pc["f1"])),
        "ece": _f(expected_calibration_error(y_true, probs, n_bins)),
        "rarest_class": rarest,
        "per_class": per_class,
        "classes": list(classes),
        "confusion_matrix": cm.tolist(),
    }


def bootstrap_ci(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], n_boot: int = 1000,
                 seed: int = 0, alpha: float = 0.05, with_auc: bool = True) -> dict:
    """Percentile bootstrap (resampling images with replacement) 95% intervals of the headline metrics
    and per-class recall: {"balanced_accuracy": [lo, hi], ..., "per_class_recall": {cls: [lo, hi]}}."""
    y_true = np.asarray(y_true, dtype=np.int64)
    n, k = len(y_true), len(classes)
    rng = np.random.default_rng(seed)
    pred = probs.argmax(axis=1)
    stats: dict[str, list] = {"balanced_accuracy": [], "accuracy": [], "macro_auc": []}
    recalls = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        yt, yp = y_true[idx], pred[idx]
        cm = confusion_matrix(yt, yp, k)
        rec = per_class_from_confusion(cm)["recall"]
        recalls.append(rec)
        stats["balanced_accuracy"].append(_nanmean(rec))
        stats["accuracy"].append(float((yt == yp).mean()))
        if with_auc:
            stats["macro_auc"].append(_nanmean(one_vs_rest_auc(yt, probs[idx])))
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)

    def interval(v) -> list:
        v = np.asarray(v, dtype=np.float64)
        v = v[~np.isnan(v)]
        return [_f(np.percentile(v, lo)), _f(np.percentile(v, hi))] if len(v) else [None, None]

    out = {m: interval(v) for m, v in stats.items() if v}
    R = np.array(recalls)
    out["per_class_recall"] = {c: interval(R[:, i]) for i, c in enumerate(classes)}
    out["n_boot"] = n_boot
    out["level"] = 1 - alpha
    return out


# ---- paired comparisons of two classifiers on the same images (the augmentation experiment) -----------------------
def log_loss(y_true: np.ndarray, probs: np.ndarray, eps: float = 1e-12) -> float:
    """Mean negative log-probability of the true class (natural log); probabilities are clipped at `eps`."""
    y_true = np.asarray(y_true, dtype=np.int64)
    if len(y_true) == 0:
        return float("nan")
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(y_true)), y_true]
    return float(-np.log(np.clip(p, eps, 1.0)).mean())


def pooled_recall(y_true: np.ndarray, y_pred: np.ndarray, classes_idx: Sequence[int]) -> float:
    """Recall over the images of several classes taken together (e.g. the tail AK + DF + VASC): correct / support."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    m = np.isin(y_true, list(classes_idx))
    return float((y_pred[m] == y_true[m]).mean()) if m.any() else float("nan")


def paired_metrics(y_true: np.ndarray, probs: np.ndarray, num_classes: int, tail_idx: Sequence[int],
                   with_auc: bool = True) -> dict[str, float]:
    """The scalar metrics the experiment compares arms on (one replicate)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, pred, num_classes)
    out = {"balanced_accuracy": balanced_accuracy_from_confusion(cm),
           "accuracy": float((pred == y_true).mean()) if len(y_true) else float("nan"),
           "tail_recall": pooled_recall(y_true, pred, tail_idx),
           "log_loss": log_loss(y_true, probs)}
    if with_auc:
        out["macro_auc"] = _nanmean(one_vs_rest_auc(y_true, probs))
    return out


def mcnemar(correct_ref: np.ndarray, correct_arm: np.ndarray) -> dict:
    """McNemar's exact test on paired per-image correctness: b = only the reference right, c = only the arm right;
    two-sided binomial p-value of min(b, c) among b + c discordant images at 1/2."""
    from scipy.stats import binomtest

    a, b_ = np.asarray(correct_ref, bool), np.asarray(correct_arm, bool)
    if a.shape != b_.shape:
        raise ConfigError(f"paired correctness vectors differ in length: {a.shape} vs {b_.shape}")
    b = int((a & ~b_).sum())
    c = int((~a & b_).sum())
    p = float(binomtest(min(b, c), b + c, 0.5).pvalue) if b + c else 1.0
    return {"n": len(a), "ref_only_correct": b, "arm_only_correct": c, "p_value": p}


def paired_bootstrap(units: Sequence[dict], num_classes: int, tail_idx: Sequence[int], n_boot: int = 1000,
                     seed: int = 0, alpha: float = 0.05, with_auc: bool = True) -> dict:
    """Paired differences arm − reference with percentile intervals, resampling folds, then seeds within a fold,
    then images within a fold (the same images for both classifiers and for every seed of that fold).

    units: dicts with `group` (the image set, e.g. the fold), `y`, `probs_ref`, `probs_arm` (same rows).
    The statistic is the mean over units of metric(arm) − metric(ref); returns {metric: {delta, ci95, n_boot}}.
    """
    if not units:
        raise ConfigError("paired_bootstrap: no units")
    groups: dict = {}
    for u in units:
        groups.setdefault(u["group"], []).append(u)
    for g, us in groups.items():
        if len({len(u["y"]) for u in us}) != 1:
            raise ConfigError(f"paired_bootstrap: group {g!r} holds replicates on different image sets")

    def delta(u, idx=None):
        y = u["y"] if idx is None else u["y"][idx]
        pa = u["probs_arm"] if idx is None else u["probs_arm"][idx]
        pr = u["probs_ref"] if idx is None else u["probs_ref"][idx]
        ma = paired_metrics(y, pa, num_classes, tail_idx, with_auc)
        mr = paired_metrics(y, pr, num_classes, tail_idx, with_auc)
        return {k: ma[k] - mr[k] for k in ma}

    point_rows = [delta(u) for u in units]
    keys = list(point_rows[0])
    point = {k: _nanmean([r[k] for r in point_rows]) for k in keys}
    rng = np.random.default_rng(seed)
    names = list(groups)
    boot = {k: np.full(n_boot, np.nan) for k in keys}
    for b in range(n_boot):
        rows = []
        for gi in rng.integers(0, len(names), len(names)):
            us = groups[names[gi]]
            idx = rng.integers(0, len(us[0]["y"]), len(us[0]["y"]))
            for ui in rng.integers(0, len(us), len(us)):
                rows.append(delta(us[ui], idx))
        for k in keys:
            boot[k][b] = _nanmean([r[k] for r in rows])
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    out = {}
    for k in keys:
        v = boot[k][~np.isnan(boot[k])]
        out[k] = {"delta": _f(point[k]),
                  "ci95": [_f(np.percentile(v, lo)), _f(np.percentile(v, hi))] if len(v) else [None, None]}
    out["n_boot"] = n_boot
    out["level"] = 1 - alpha
    return out
