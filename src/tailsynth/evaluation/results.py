"""An experiment's results from its saved predictions: per-arm tables, paired comparisons and the decision, per
evaluation part (the reported folds, and another source when one was given)."""

from __future__ import annotations

import json
from pathlib import Path

from ..ood.select import jsonable
from .arms import CONTRASTS
from .decision import decide
from .predictions import PREDICTIONS, load_predictions
from .replicates import Replicate
from .stats import arm_table, compare

RESULTS_FILE = "results.json"
# The markdown table of a methods comparison (`experiment`, `experiment --folds`): read by people, not parsed.
COMPARISON_TABLE = "comparison.md"


def collect(out: Path, keys: list[str], reps: list[Replicate], *, tail: list[str], n_boot: int,
            eval_data: bool, ref: str = "real", contrasts=CONTRASTS, rule: bool = True) -> dict:
    """Per-arm tables and paired comparisons from the saved predictions, for the reported part (when the replicates
    have one) and the eval source."""
    reported = any(r.reported for r in reps)
    parts = ({"test": "seed"} if reported else {}) | ({"eval": "replicate"} if eval_data else {})
    res: dict = {"parts": {}}
    for part, passes in parts.items():
        preds: dict[str, dict] = {}
        for k in keys:
            for r in reps:
                f = out / "runs" / k / r.tag / PREDICTIONS.format(part=part)
                if f.is_file():
                    preds.setdefault(k, {})[r.tag] = load_predictions(f)
        if ref not in preds:
            res["parts"][part] = {"arms": {}, "vs_real": {}, "contrasts": {}}
            continue
        first = next(iter(preds[ref].values()))
        classes = first["classes"]
        entry = {"classes": classes, "dropped_classes": first["dropped"],
                 "support": {c: int((first["y"] == i).sum()) for i, c in enumerate(classes)},
                 "arms": {k: arm_table(p, classes, tail) for k, p in preds.items()},
                 "vs_real": {k: compare(preds[ref], p, classes, tail, n_boot, passes=passes)
                             for k, p in preds.items() if k != ref},
                 "contrasts": {f"{a} - {b}": compare(preds[b], preds[a], classes, tail, n_boot, passes=passes)
                               for a, b in contrasts if a in preds and b in preds}}
        if rule:
            entry["decision"] = decide(entry)
        res["parts"][part] = entry
    return res


def write_results(out: Path, results: dict, table: str, markdown: str) -> Path:
    """results.json (strict JSON) and the markdown table TABLE beside it; returns the table's path."""
    (out / RESULTS_FILE).write_text(json.dumps(jsonable(results), indent=1))
    (out / table).write_text(markdown)
    return out / table
