"""Which arm a pipeline run serves, and why: the export rule of `train_augment`, in one place.

Two rules:
- **single split** (no evidence given): the synthetic arm (e) is served when it kept synthetic images and its balanced
  accuracy on the run's evaluation split is not below real-only's. One split cannot separate small differences, so
  this is the rule of quick runs;
- **evidence**: a profile names the decisive experiment's results (`experiment-augment --folds`: its folder or its
  results record) on the same kind of data; (e) is served only when that experiment's pre-registered rule says it *helps* (`decision.decide`)
  and the run kept synthetic images. Anything else (no verdict for the arm yet, no detectable effect, hurts) serves
  real-only, and the reason says which.

`decide_serving` returns the record the comparison stage writes beside the table and the report shows; its `margin`
is what the pipeline's `dsl.If` tests (>= 0: serve the synthetic arm).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..data.errors import DataError
from .results import RESULTS_FILE

SYNTHETIC, REAL = "real+synthetic", "real-only"
NO_SYNTHETIC_MARGIN = -2.0  # below any difference of balanced accuracies
EVIDENCE_ARM = "ood"  # the experiment's arm (e): inpainted candidates, selected


def evidence_record(path: str | Path) -> Path:
    """The results record PATH names: the file itself, or the results record in the experiment folder PATH (a profile
    names the folder, so it needs no file name). Missing: an error naming it."""
    path = Path(path)
    record = path / RESULTS_FILE if path.is_dir() else path
    if not record.is_file():
        raise DataError(f"{path}: no experiment results there (serve_evidence names an `experiment-augment` "
                        f"folder or its {RESULTS_FILE})")
    return record


def experiment_verdict(path: str | Path, arm: str = EVIDENCE_ARM) -> dict | None:
    """The decision record of ARM in an experiment's results (`evidence_record`; its first evaluation part that has
    one), or None when the experiment has not decided that arm yet. A missing or foreign file is an error naming it."""
    path = evidence_record(path)
    try:
        parts = json.loads(path.read_text())["parts"]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not an experiment-augment results file ({type(e).__name__}: {e})") from e
    for name, part in parts.items():
        verdict = (part.get("decision") or {}).get(arm)
        if verdict:
            return {"part": name, **verdict}
    return None


def decide_serving(*, kept: int, delta: float, split: str, evidence: str = "") -> dict:
    """The served arm, the rule and the reason, for a run whose synthetic arm kept KEPT images and scored DELTA
    balanced accuracy against real-only on SPLIT."""
    rule = "evidence" if evidence else "single split"
    if kept == 0:
        return {"served": REAL, "rule": rule, "margin": NO_SYNTHETIC_MARGIN,
                "reason": "the synthetic arm kept no synthetic image (synthesizer gate or selection floor), so its "
                          "model is a real-only model under another name"}
    if not evidence:
        serve = delta >= 0
        return {"served": SYNTHETIC if serve else REAL, "rule": rule, "margin": float(delta),
                "reason": f"real+synthetic {delta:+.3f} balanced accuracy vs real-only on this run's {split} split "
                          f"({'not below' if serve else 'below'} it; one split, no interval)"}
    v = experiment_verdict(evidence)
    if v is None:
        return {"served": REAL, "rule": rule, "margin": -1.0, "evidence": str(evidence),
                "reason": f"the experiment {evidence} has no verdict for the synthetic arm yet; real-only until it "
                          f"says the arm helps"}
    d = v.get("delta_balanced_accuracy_vs_a") or {}
    ci = d.get("ci95") or [None, None]
    figures = (f" (Δ balanced accuracy {d['delta']:+.3f}, 95% interval [{ci[0]:+.3f}, {ci[1]:+.3f}])"
               if d.get("delta") is not None and None not in ci else "")
    serve = v["verdict"] == "helps"
    return {"served": SYNTHETIC if serve else REAL, "rule": rule, "margin": 1.0 if serve else -1.0,
            "evidence": str(evidence), "verdict": v["verdict"],
            "reason": f"the experiment's pre-registered rule on its own folds says '{v['verdict']}' for the "
                      f"synthetic arm{figures}; this run's split ({delta:+.3f}) does not decide"}
