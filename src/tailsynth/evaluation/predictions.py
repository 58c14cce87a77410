"""Held-out predictions of a trained run: logits on a split, post-hoc τ tuned on the inner split, saved as
`predictions_<part>.npz` (ids, labels, probabilities) for the tables and the paired statistics."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..metrics import softmax

PREDICTIONS = "predictions_{part}.npz"
POSTHOC_TAUS = tuple(round(0.25 * i, 2) for i in range(9))  # 0 .. 2


def predict_part(model_dir: Path, data, split: str, splits=None, drop_unknown: bool = False) -> dict:
    """Logits of MODEL_DIR on SPLIT of DATA: {ids, y (model class indices), logits, dropped}.

    `drop_unknown`: images of classes the model lacks (e.g. SCC in an ISIC folder) are left out and counted,
    instead of being an error; a new evaluation source may hold classes the training data did not.
    """
    from ..classify.model import load_classifier, predict_arrays

    model, meta = load_classifier(model_dir)
    ids, x, y, dropped = part_arrays(str(data), split, None if splits is None else str(splits),
                                      tuple(meta.classes), int(meta.resolution), drop_unknown)
    _, _, logits = predict_arrays(model, meta, x, features=True)
    return {"ids": ids, "y": y, "logits": logits.astype(np.float64), "dropped": dict(dropped),
            "classes": list(meta.classes)}


@functools.lru_cache(maxsize=4)
def part_arrays(data: str, split: str, splits: str | None, classes: tuple, resolution: int, drop_unknown: bool):
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
        p = softmax(posthoc_adjust(v["logits"], counts, t))
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
    np.savez(path, ids=pred["ids"], y=pred["y"], probs=softmax(logits), classes=np.array(pred["classes"]),
             posthoc_tau=np.float64(posthoc_tau or 0.0), dropped=json.dumps(pred.get("dropped", {})))
    return path


def load_predictions(path: Path) -> dict:
    with np.load(path) as z:
        return {"ids": z["ids"], "y": z["y"], "probs": z["probs"], "classes": [str(c) for c in z["classes"]],
                "dropped": json.loads(str(z["dropped"]))}


