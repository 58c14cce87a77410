"""Per-arm tables over replicates and the paired comparisons of two arms (bootstrap intervals, McNemar)."""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError

HEADLINE = ("balanced_accuracy", "tail_recall", "accuracy", "macro_auc", "log_loss")


def _t95(n: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1)) if n > 1 else math.nan


def summarize(values, bounds: tuple[float, float] | None = None) -> dict:
    """Mean, sample std and a 95% t-interval over replicates (clipped to `bounds` for bounded metrics)."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": [None, None]}
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if len(v) > 1 else math.nan
    half = _t95(len(v)) * std / math.sqrt(len(v)) if len(v) > 1 else math.nan
    lo, hi = mean - half, mean + half
    if bounds is not None and len(v) > 1:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"n": len(v), "mean": mean, "std": std, "ci95": [lo, hi]}


def arm_table(preds: dict[str, dict], classes: list[str], tail: list[str]) -> dict:
    """Per-replicate metrics of one arm and their summary. preds: replicate tag -> predictions."""
    from ..metrics import confusion_matrix, paired_metrics, per_class_from_confusion

    tail_idx = [classes.index(c) for c in tail if c in classes]
    per_rep, recalls = {}, {c: [] for c in classes}
    for tag, p in sorted(preds.items()):
        m = paired_metrics(p["y"], p["probs"], len(classes), tail_idx)
        rec = per_class_from_confusion(confusion_matrix(p["y"], p["probs"].argmax(1), len(classes)))["recall"]
        for i, c in enumerate(classes):
            recalls[c].append(None if np.isnan(rec[i]) else float(rec[i]))
        per_rep[tag] = m
    rate = (0.0, 1.0)
    out = {k: summarize([m[k] for m in per_rep.values()], None if k == "log_loss" else rate) for k in HEADLINE}
    out["per_class_recall"] = {c: summarize(v, rate) for c, v in recalls.items()}
    out["replicates"] = per_rep
    return out


def compare(ref: dict[str, dict], arm: dict[str, dict], classes: list[str], tail: list[str], n_boot: int,
            seed: int = 0, passes: str = "seed") -> dict:
    """Paired Δ arm − ref (bootstrap over image sets, seeds and images) and McNemar's test on per-image correctness.

    McNemar needs each image once: `passes="seed"` concatenates the image sets (folds) of one seed, one test per
    seed; `passes="replicate"` tests each replicate alone (every model on one shared evaluation set).
    """
    from ..metrics import mcnemar, paired_bootstrap

    tail_idx = [classes.index(c) for c in tail if c in classes]
    common = sorted(set(ref) & set(arm))
    if not common:
        return {"n_replicates": 0}
    units = []
    for tag in common:
        r, a = ref[tag], arm[tag]
        if not np.array_equal(r["ids"], a["ids"]):
            raise ConfigError(f"replicate {tag}: the two arms were evaluated on different images")
        # On a shared evaluation set every model sees the same images: one group, so the images are resampled
        # once per bootstrap draw and the models (folds x seeds) within it.
        group = tag.rsplit("_seed", 1)[0] if passes == "seed" else "shared"
        units.append({"group": group, "y": r["y"], "probs_ref": r["probs"], "probs_arm": a["probs"]})
    boot = paired_bootstrap(units, len(classes), tail_idx, n_boot=n_boot, seed=seed)
    tests = {}
    keys = sorted({t.rsplit("_seed", 1)[1] for t in common}) if passes == "seed" else common
    for k in keys:
        tags = [t for t in common if t.endswith(f"_seed{k}")] if passes == "seed" else [k]
        y = np.concatenate([ref[t]["y"] for t in tags])
        cr = np.concatenate([ref[t]["probs"].argmax(1) for t in tags]) == y
        ca = np.concatenate([arm[t]["probs"].argmax(1) for t in tags]) == y
        tests[f"seed{k}" if passes == "seed" else k] = mcnemar(cr, ca)
    ps = [t["p_value"] for t in tests.values()]
    return {"n_replicates": len(common), "bootstrap": boot, "mcnemar": tests,
            "mcnemar_p_max": max(ps), "mcnemar_p_median": float(np.median(ps))}
