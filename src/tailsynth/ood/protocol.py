"""The evaluation protocol of the augmentation experiment: replicates, held-out predictions, paired statistics.

A replicate is one (image set, seed) pair with a split manifest of three parts:
  train  the images the classifier learns from,
  val    an inner split of the training part, on which the trainer picks its epoch (and post-hoc τ is tuned),
  test   the reported images, never used for any choice.
`--folds k`: lesion-grouped stratified k-fold over the source's train + val; fold i is `test`, and an inner
grouped stratified share of the other folds is `val`. Without folds: the source's own val split is `test` and
the inner `val` is cut from its train split. Either way each seed trains one model per image set.
"""

from __future__ import annotations

import csv
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError

PREDICTIONS = "predictions_{part}.npz"
POSTHOC_TAUS = tuple(round(0.25 * i, 2) for i in range(9))  # 0 .. 2
HEADLINE = ("balanced_accuracy", "tail_recall", "accuracy", "macro_auc", "log_loss")


@dataclass(frozen=True)
class Replicate:
    group: str  # the image set: "fold0".. or "val"
    seed: int
    manifest: Path

    @property
    def tag(self) -> str:
        return f"{self.group}_seed{self.seed}"


def _write_manifest(path: Path, assign: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "split"])
        w.writerows(sorted(assign.items()))
    return path


def make_replicates(data, out: Path, *, folds: int | None, seeds, splits=None, inner_val: float = 0.15,
                    split_seed: int = 0) -> list[Replicate]:
    """Write one split manifest per image set under OUT/splits and return every (image set, seed) replicate."""
    from ..data import load_source
    from ..data.errors import DataError
    from ..data.splits import grouped_stratified_assign, kfold_assign

    if not 0 < inner_val < 1:
        raise ConfigError(f"inner_val must lie in (0, 1), got {inner_val}")
    ds = load_source(data, splits=splits)
    sets: dict[str, dict[str, str]] = {}
    if folds:
        if folds < 2:
            raise ConfigError(f"--folds needs k >= 2, got {folds}")
        pool = [r for r in ds.records if r.split in ("train", "val", "all")]
        if not pool:
            raise DataError(f"{data}: no train/val images to cross-validate over (splits {ds.splits})")
        fold_of = kfold_assign(pool, folds, split_seed)
        for i in range(folds):
            rest = [r for r in pool if fold_of[r.image_id] != i]
            inner = grouped_stratified_assign(rest, {"train": 1 - inner_val, "val": inner_val}, split_seed + 1 + i)
            sets[f"fold{i}"] = {**inner, **{r.image_id: "test" for r in pool if fold_of[r.image_id] == i}}
    else:
        train = [r for r in ds.records if r.split == "train"]
        test = [r for r in ds.records if r.split == "val"]
        if not train or not test:
            raise DataError(f"{data}: without --folds the source needs its own train and val splits (has "
                            f"{ds.splits}); pass --folds or a --splits manifest")
        inner = grouped_stratified_assign(train, {"train": 1 - inner_val, "val": inner_val}, split_seed)
        sets["val"] = {**inner, **{r.image_id: "test" for r in test}}
    reps = []
    for name, assign in sets.items():
        man = _write_manifest(out / "splits" / f"{name}.csv", assign)
        reps += [Replicate(name, int(s), man) for s in seeds]
    return reps


# ---- predictions of a trained model ------------------------------------------------------------------------------
def predict_part(model_dir: Path, data, split: str, splits=None, drop_unknown: bool = False) -> dict:
    """Logits of MODEL_DIR on SPLIT of DATA: {ids, y (model class indices), logits, dropped}.

    `drop_unknown`: images of classes the model lacks (e.g. SCC in an ISIC folder) are left out and counted,
    instead of being an error; a new evaluation source may hold classes the training data did not.
    """
    from ..classify.model import load_classifier, predict_arrays

    model, meta = load_classifier(model_dir)
    ids, x, y, dropped = _part_arrays(str(data), split, None if splits is None else str(splits),
                                      tuple(meta.classes), int(meta.resolution), drop_unknown)
    _, _, logits = predict_arrays(model, meta, x, features=True)
    return {"ids": ids, "y": y, "logits": logits.astype(np.float64), "dropped": dict(dropped),
            "classes": list(meta.classes)}


@functools.lru_cache(maxsize=4)
def _part_arrays(data: str, split: str, splits: str | None, classes: tuple, resolution: int, drop_unknown: bool):
    """Decoded, resized pixels of one split, kept for the process: an experiment scores every arm's model of every
    replicate on the same evaluation split, and decoding full-size ISIC JPEGs dominates that cost."""
    from ..classify.evaluate import align_labels
    from ..data import load_source
    from ..data.errors import DataError

    ds = load_source(data, splits=splits)
    if split not in ds.splits:
        raise DataError(f"{data}: no split {split!r} (has {ds.splits})")
    part = ds.split(split)
    dropped: dict[str, int] = {}
    if drop_unknown:
        keep = [r for r in part.records if r.label in classes]
        for r in part.records:
            if r.label not in classes:
                dropped[r.label] = dropped.get(r.label, 0) + 1
        part = part.subset(keep)
    if len(part) == 0:
        raise DataError(f"{data}: split {split!r} holds no images of the model's classes {list(classes)}")
    x, y = part.arrays(resolution)
    y = align_labels(list(classes), part.classes, y, data)
    return np.array([r.image_id for r in part.records]), x, y, dropped


def tune_posthoc_tau(model_dir: Path, data, splits, taus=POSTHOC_TAUS) -> tuple[float, dict]:
    """τ of post-hoc logit adjustment with the best balanced accuracy on the inner val split (never the reported one)."""
    from ..classify.losses import posthoc_adjust
    from ..metrics import classification_metrics

    v = predict_part(model_dir, data, "val", splits)
    counts = _training_counts(model_dir, v["classes"])
    scores = {}
    for t in taus:
        p = _softmax(posthoc_adjust(v["logits"], counts, t))
        scores[t] = classification_metrics(v["y"], p, v["classes"])["balanced_accuracy"] or -1.0
    best = max(taus, key=lambda t: (scores[t], -t))
    return float(best), {str(t): s for t, s in scores.items()}


def _training_counts(model_dir: Path, classes: list[str]) -> list[float]:
    from ..classify.metadata import read_meta

    meta = read_meta(model_dir)
    counts = (meta.config or {}).get("loss_class_counts") or meta.train_class_counts
    if not counts:
        raise ConfigError(f"{model_dir}: the model's config holds no training class counts for post-hoc adjustment")
    return [counts[c] for c in classes]


def save_predictions(run_dir: Path, part: str, pred: dict, posthoc_tau: float | None = None) -> Path:
    from ..classify.losses import posthoc_adjust

    logits = pred["logits"]
    if posthoc_tau:
        logits = posthoc_adjust(logits, _training_counts(run_dir, pred["classes"]), posthoc_tau)
    path = run_dir / PREDICTIONS.format(part=part)
    np.savez(path, ids=pred["ids"], y=pred["y"], probs=_softmax(logits), classes=np.array(pred["classes"]),
             posthoc_tau=np.float64(posthoc_tau or 0.0), dropped=json.dumps(pred.get("dropped", {})))
    return path


def load_predictions(path: Path) -> dict:
    with np.load(path) as z:
        return {"ids": z["ids"], "y": z["y"], "probs": z["probs"], "classes": [str(c) for c in z["classes"]],
                "dropped": json.loads(str(z["dropped"]))}


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# ---- tables ------------------------------------------------------------------------------------------------------
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
