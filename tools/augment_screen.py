"""The screen of arm (e) (protocol of 2026-12-03 in docs/results/augmentation_experiment_ham.md, "The screen"):
synthetic share r in {0.25, 0.5} x loss weight w in {0.3, 1.0} x cleaning confidence in {0.5, 0.8} (band [1, 2] d_c),
additive dose, on folds 0 and 1, each cell trained on the fold's training part and scored on its inner split only.
The reported folds are never predicted (replicates with reported=False). Candidates are scored by each fold's arm-(a)
model, and those painted on, harmonized from or copying a reported lesion are excluded, as in the experiment.

Resumable: a finished cell is reused. Writes RESULTS/augment_screen.md and .json with the choice by the rule written
before the run: the highest mean inner-split BMA; ties within 0.005 -> the smaller r, then the smaller w (then the
default confidence 0.8).

    .venv/bin/python tools/augment_screen.py --data ../shared/data/ham10000 --experiment ../runs_aug_ham \
        --candidates ../cands_ham/inpaint --results docs/results/augmentation_ham [--epochs 12 --resolution 64]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

SHARES = (0.25, 0.5)
WEIGHTS = (0.3, 1.0)
CONFIDENCES = (0.5, 0.8)
SCREEN_FOLDS = (0, 1)
TIE = 0.005
DEFAULT = {"share": 0.25, "weight": 0.3, "confidence": 0.8}  # the protocol's default when the screen cannot run


def choose(means: dict[tuple[float, float, float], float]) -> dict:
    """The cell (r, w, confidence) by the rule: best mean; within TIE of it, smaller r, smaller w, confidence 0.8."""
    best = max(means.values())
    near = [k for k, m in means.items() if m >= best - TIE]
    r, w, c = min(near, key=lambda k: (k[0], k[1], abs(k[2] - DEFAULT["confidence"])))
    return {"share": r, "weight": w, "confidence": c}


def cell_tag(r: float, w: float, c: float) -> str:
    return f"e_r{r:g}_w{w:g}_c{c:g}"


def _inner_bma(run: Path) -> float:
    from tailsynth.classify.folders import TrainedClassifier

    return float(TrainedClassifier(run).metrics()["balanced_accuracy"])  # the inner split: the run's `val` part


def run_screen(a) -> dict:
    from tailsynth.classify.folders import TrainedClassifier
    from tailsynth.evaluation.augment import select_for_replicate
    from tailsynth.evaluation.replicates import Replicate
    from tailsynth.evaluation.runs import RunPlan, baseline_spec, run_one

    base = baseline_spec(a.baseline)
    common = {"backbone": a.backbone, "loss": base["loss"], "sampler": base["sampler"], "epochs": a.epochs,
              "resolution": a.resolution, "split_seed": 0, "quiet": True, "write_reports": False,
              "precision": a.precision, "threads": a.threads, **base["train_kw"]}
    screen = a.experiment / "screen_e"
    plan = RunPlan(screen, a.data, common)
    rows = []
    for fold in SCREEN_FOLDS:
        rep = Replicate(f"fold{fold}", a.seed, a.experiment / "splits" / f"fold{fold}.csv", reported=False)
        scorer = a.experiment / "runs" / "real" / f"fold{fold}_seed{a.seed}"
        if not TrainedClassifier(scorer).has_model():
            raise SystemExit(f"{scorer}: arm (a) of fold {fold} is not trained (run experiment-augment --arms real)")
        for c in CONFIDENCES:
            sel = screen / "selection" / f"c{c:g}" / rep.tag
            counts, _ = select_for_replicate(rep, scorer, {"ood": a.candidates}, a.data, sel, gamma=0.4, gammas=[],
                                             score="mahalanobis", clean={"confidence": c, "band": [1.0, 2.0]},
                                             log=print)
            for r, w in itertools.product(SHARES, WEIGHTS):
                task = plan.task(cell_tag(r, w, c), rep, posthoc=base["posthoc"],
                                 synthetic_manifest=str(sel / "ood_g0p40.csv"), synthetic_ratio=r,
                                 synthetic_weight=w, synthetic_dose="add")
                t0 = time.time()
                run_one(task, print)  # trains unless finished; predicts nothing (reported=False, no eval source)
                rows.append({"fold": fold, "share": r, "weight": w, "confidence": c,
                             "kept": counts.get("ood@0.4"), "inner_bma": round(_inner_bma(Path(task["run_dir"])), 4),
                             "wall_s": round(time.time() - t0, 1), "load": round(os.getloadavg()[0], 2)})
                print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows}


def write(results: Path, rows: list[dict], wall_s: float) -> dict:
    cells = sorted({(x["share"], x["weight"], x["confidence"]) for x in rows})
    means = {k: sum(x["inner_bma"] for x in rows if (x["share"], x["weight"], x["confidence"]) == k) / len(SCREEN_FOLDS)
             for k in cells}
    choice = choose(means)
    out = {"rule": "highest mean inner-split BMA over folds 0-1; ties within 0.005 -> smaller r, then smaller w",
           "rows": rows, "mean_inner_bma": {cell_tag(*k): round(m, 4) for k, m in means.items()},
           "choice": choice, "wall_s": round(wall_s, 1)}
    results.mkdir(parents=True, exist_ok=True)
    (results / "augment_screen.json").write_text(json.dumps(out, indent=1))
    lines = ["# Arm (e) screen: share r, weight w, cleaning confidence on the inner splits of folds 0-1", "",
             "Rule (protocol of 2026-12-03, written before the run): the highest mean inner-split BMA wins; ties "
             "within 0.005 -> the smaller r, then the smaller w. The reported folds were not predicted.", "",
             "| r | w | confidence | fold 0 | fold 1 | mean | kept per class (fold 0) |", "|---|---|---|---|---|---|---|"]
    for k in cells:
        per = {x["fold"]: x for x in rows if (x["share"], x["weight"], x["confidence"]) == k}
        lines.append(f"| {k[0]:g} | {k[1]:g} | {k[2]:g} | {per[0]['inner_bma']:.4f} | {per[1]['inner_bma']:.4f} | "
                     f"{means[k]:.4f} | {per[0]['kept']} |")
    lines += ["", f"**Choice: r = {choice['share']:g}, w = {choice['weight']:g}, confidence = "
                  f"{choice['confidence']:g}.** Wall time {out['wall_s']} s; load per run in the JSON.", ""]
    (results / "augment_screen.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--experiment", required=True, type=Path, help="the experiment-augment folder holding arm (a)")
    ap.add_argument("--candidates", required=True, type=Path, help="the inpainted candidate set")
    ap.add_argument("--results", required=True, type=Path)
    ap.add_argument("--baseline", default="class-balanced-sampler")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t0 = time.time()
    write(a.results, run_screen(a)["rows"], time.time() - t0)


if __name__ == "__main__":
    main()
