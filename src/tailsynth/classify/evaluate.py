"""Evaluate a classifier model folder on one split: the metrics (`folders.METRICS_FILE`), per-class CSV, markdown
table, PNG plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..metrics import softmax
from .folders import write_metrics


def write_evaluation(out, y_true: np.ndarray, logits: np.ndarray, classes: Sequence[str], *, split: str,
                     model_dir=None, data=None, extra: dict | None = None, plots: bool = True,
                     bootstrap: int = 1000, seed: int = 0, prefix: str = "") -> dict:
    """Compute every metric from logits and write the report files into OUT. Returns the metrics dict."""
    from ..metrics import bootstrap_ci, classification_metrics
    from .report import write_classifier_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    probs = softmax(np.asarray(logits, dtype=np.float64))
    m = classification_metrics(y_true, probs, classes)
    m = {"split": split, "model": str(model_dir) if model_dir else None, "data": data, **m}
    if bootstrap:
        m["ci95"] = bootstrap_ci(y_true, probs, classes, n_boot=bootstrap, seed=seed)
    if extra:
        m.update(extra)
    write_metrics(out, m, prefix)
    write_classifier_report(m, out, plots=plots, prefix=prefix)
    return m


def align_labels(model_classes: Sequence[str], data_classes: Sequence[str], labels: np.ndarray, source) -> np.ndarray:
    """Re-index data labels into the model's class order; a data class the model lacks is an error."""
    from ..data.errors import DataError

    missing = sorted({data_classes[i] for i in np.unique(labels)} - set(model_classes))
    if missing:
        raise DataError(f"{source}: classes {missing} are not among the model's classes {list(model_classes)}")
    pos = {c: i for i, c in enumerate(model_classes)}
    remap = np.array([pos.get(c, -1) for c in data_classes], dtype=np.int64)
    return remap[labels]


def evaluate_model(model, data, split: str, out, splits=None, posthoc_tau: float | None = None,
                   bootstrap: int = 1000, seed: int = 0, plots: bool = True, batch_size: int = 256) -> dict:
    """Evaluate MODEL (a model folder or its weights file) on SPLIT of DATA; writes OUT's metrics and the report.

    Sources without train/val splits get the same lesion-grouped split as training (the model's split_seed).
    `posthoc_tau`: subtract τ·log(training prior) from the logits before scoring (Menon et al.).
    """
    import torch

    from ..data import ensure_splits, load_source
    from ..data.errors import DataError
    from .losses import posthoc_adjust
    from .model import load_classifier

    net, meta = load_classifier(model)
    cfg = meta.config or {}
    ds = load_source(data, splits=splits)
    if split not in ds.splits:
        ds = ensure_splits(ds, seed=int(cfg.get("split_seed", 0)))
    if split not in ds.splits:
        raise DataError(f"{data}: no split {split!r} (has {ds.splits})")
    part = ds.split(split)
    x, y = part.arrays(int(meta.resolution))
    y = align_labels(meta.classes, part.classes, y, data)
    with torch.no_grad():
        logits = []
        from .model import preprocess

        for i in range(0, len(x), batch_size):
            logits.append(net(preprocess(x[i : i + batch_size], meta)).float().numpy())
    logits = np.concatenate(logits) if logits else np.zeros((0, len(meta.classes)))
    extra = {"posthoc_tau": posthoc_tau}
    if posthoc_tau:
        counts = cfg.get("loss_class_counts") or meta.train_class_counts
        if not counts:
            raise ConfigError(f"{model}: the model's config holds no training class counts; post-hoc adjustment "
                             "needs them")
        logits = posthoc_adjust(logits, [counts[c] for c in meta.classes], posthoc_tau)
    return write_evaluation(out, y, logits, meta.classes, split=split, model_dir=model, data=str(data),
                            extra=extra, plots=plots, bootstrap=bootstrap, seed=seed)
