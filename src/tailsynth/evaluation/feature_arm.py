"""Arm (g) of the augmentation experiment and its control (g0): per replicate, arm (a)'s backbone frozen, tail
features drawn from per-class Gaussians, the head re-fitted on real + synthetic features (g) or on real features
only (g0). The rule is the dated amendment of docs/results/augmentation_experiment_ham.md; the parts are in
`classify.feature_synthesis`.

Per run folder: the record (FEATURE_ARM_FILE: share, the inner-val BMA of every l2, the chosen l2, counts, wall
time) and the held-out predictions in the experiment's format, so the tables and paired statistics read (g) like
any other arm. A finished run is reused; a screen run (report=False) never reads the reported part.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..classify.feature_synthesis import (
    ClassGaussians,
    balanced_weights,
    fit_head,
    flip_views,
    head_logits,
    synthetic_counts,
)
from ..metrics import softmax
from .predictions import PREDICTIONS, part_arrays, save_predictions

FEATURE_ARM_FILE = "feature_arm.json"
L2_GRID = (1e-4, 1e-3, 1e-2)
L2_TIE = 0.005  # inner-val BMA within this of the best: take the larger l2 (the simpler head)


def _features(model, meta, images: np.ndarray) -> np.ndarray:
    from ..classify.model import predict_arrays

    # fp32: the features feed a fitted density; bf16 rounding would be part of what the Gaussian learns.
    return predict_arrays(model, meta, images, features=True, precision="fp32")[1]


def _part(data, split: str, manifest, meta, drop_unknown: bool = False):
    return part_arrays(str(data), split, None if manifest is None else str(manifest), tuple(meta.classes),
                        int(meta.resolution), drop_unknown)


def _balanced_accuracy(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> float:
    from ..metrics import classification_metrics

    return float(classification_metrics(y, probs, classes)["balanced_accuracy"] or 0.0)


def _choose_l2(scores: dict[float, float]) -> float:
    best = max(scores.values())
    return max(l2 for l2, s in scores.items() if s >= best - L2_TIE)


def _training_set(model, meta, data, manifest, tail: list[str], share: float, seed: int):
    """(features, labels, per-sample weights, counts record): real inner-train features in four views, plus the
    synthetic tail features at SHARE."""
    _, x, y, _ = _part(data, "train", manifest, meta)
    feats = _features(model, meta, flip_views(x))
    labels = np.tile(y, len(feats) // len(y))
    tail_idx = [meta.classes.index(c) for c in tail if c in meta.classes]
    counts = synthetic_counts(labels, tail_idx, share)
    record = {"real_features": {meta.classes[c]: int((labels == c).sum()) for c in tail_idx},
              "synthetic_features": {meta.classes[c]: n for c, n in counts.items()}}
    if share > 0:
        gauss = ClassGaussians.fit(feats, labels, tail_idx)
        syn_f, syn_y = gauss.sample(counts, seed)
        record["ledoit_wolf_shrinkage"] = {meta.classes[c]: round(s, 4) for c, s in gauss.shrinkage.items()}
        feats, labels = np.concatenate([feats, syn_f]), np.concatenate([labels, syn_y])
    return feats, labels, balanced_weights(labels, len(meta.classes)), record


def run_feature_arm(scorer: Path, data, manifest: Path, run_dir: Path, *, share: float, seed: int,
                    tail: list[str], report: bool = True, has_test: bool = True, eval_data=None,
                    eval_split: str = "test", eval_splits=None, l2_grid=L2_GRID, log=print) -> dict:
    """One (g) run (share > 0) or (g0) run (share 0) of one replicate, from its arm-(a) model SCORER. `has_test`
    False: the replicate has no reported part (a final model), only EVAL_DATA is read."""
    import torch

    from ..classify.model import load_classifier

    run_dir = Path(run_dir)
    record_file = run_dir / FEATURE_ARM_FILE
    wanted = ["test"] * (report and has_test) + ["eval"] * (report and eval_data is not None)
    if record_file.is_file() and all((run_dir / PREDICTIONS.format(part=p)).is_file() for p in wanted):
        return json.loads(record_file.read_text())
    t0 = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    log(f"  feature arm r={share:g}: {run_dir}")
    torch.manual_seed(seed)
    model, meta = load_classifier(scorer)
    classes = list(meta.classes)
    feats, labels, weights, record = _training_set(model, meta, data, manifest, tail, share, seed)
    head = model.get_classifier()
    w0, b0 = head.weight.detach().numpy(), head.bias.detach().numpy()
    _, xv, yv, _ = _part(data, "val", manifest, meta)
    fv = _features(model, meta, xv)
    heads, scores = {}, {}
    for l2 in l2_grid:
        heads[l2] = fit_head(feats, labels, weights, w0, b0, l2)
        scores[l2] = _balanced_accuracy(yv, softmax(head_logits(fv, *heads[l2])), classes)
    chosen = _choose_l2(scores)
    a_val = _balanced_accuracy(yv, softmax(head_logits(fv, w0, b0)), classes)
    parts = [("test", data, "test", manifest, False)] * (report and has_test)
    if report and eval_data is not None:
        parts.append(("eval", eval_data, eval_split, eval_splits, True))
    for part, src, split, splits, drop in parts:
        ids, x, y, dropped = _part(src, split, splits, meta, drop)
        logits = head_logits(_features(model, meta, x), *heads[chosen])
        save_predictions(run_dir, part, {"ids": ids, "y": y, "logits": logits, "classes": classes,
                                         "dropped": dict(dropped)})
    record |= {"scorer": str(scorer), "share": share, "seed": seed, "views": 4, "l2_val_balanced_accuracy":
               {f"{k:g}": round(v, 4) for k, v in scores.items()}, "l2": chosen,
               "val_balanced_accuracy": round(scores[chosen], 4), "a_val_balanced_accuracy": round(a_val, 4),
               "reported": report and has_test, "wall_s": round(time.time() - t0, 1)}
    record_file.write_text(json.dumps(record, indent=1))
    return record
