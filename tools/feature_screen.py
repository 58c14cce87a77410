"""The screen of arm (g) (amendment of 2026-12-07 in docs/results/augmentation_experiment_ham.md): r in {0.25, 0.5}
on the inner splits of folds 0 and 1, from each fold's arm-(a) model in an `experiment-augment` folder. The reported
folds are never read (run_feature_arm with report=False). Writes RESULTS/feature_screen.md and .json with the choice
by the rule written before the run: the higher mean inner-val BMA; ties within 0.005 -> the smaller r.

    .venv/bin/python tools/feature_screen.py --data ../shared/data/ham10000 --experiment ../runs_aug_ham \
        --results docs/results/augmentation_ham
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

SHARES = (0.25, 0.5)
SCREEN_FOLDS = (0, 1)
TIE = 0.005
DEFAULT_SHARE = 0.25  # the amendment's default when the screen cannot run


def choose(means: dict[float, float]) -> float:
    best = max(means.values())
    return min(r for r, m in means.items() if m >= best - TIE)


def main() -> None:
    from tailsynth.classify.folders import TrainedClassifier
    from tailsynth.data.classes import TAIL_CLASSES
    from tailsynth.evaluation.feature_arm import run_feature_arm

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--experiment", required=True, type=Path, help="the experiment-augment folder holding arm (a)")
    ap.add_argument("--results", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rows, t0 = [], time.time()
    for fold in SCREEN_FOLDS:
        tag = f"fold{fold}_seed{a.seed}"
        scorer = a.experiment / "runs" / "real" / tag
        manifest = a.experiment / "splits" / f"fold{fold}.csv"
        if not TrainedClassifier(scorer).has_model():
            raise SystemExit(f"{scorer}: arm (a) of fold {fold} is not trained yet (run experiment-augment --arms real)")
        for r in SHARES:
            rec = run_feature_arm(scorer, a.data, manifest, a.experiment / "screen_features" / f"r{r:g}" / tag,
                                  share=r, seed=a.seed, tail=list(TAIL_CLASSES), report=False)
            rows.append({"fold": fold, "share": r, **{k: rec[k] for k in ("l2", "val_balanced_accuracy",
                                                                      "a_val_balanced_accuracy",
                                                                      "l2_val_balanced_accuracy", "wall_s")}})
    means = {r: sum(x["val_balanced_accuracy"] for x in rows if x["share"] == r) / len(SCREEN_FOLDS) for r in SHARES}
    choice = choose(means)
    load = os.getloadavg()[0]
    out = {"rule": "highest mean inner-val BMA over folds 0-1; ties within 0.005 -> the smaller r",
           "rows": rows, "mean_val_balanced_accuracy": {f"{r:g}": round(m, 4) for r, m in means.items()},
           "choice": {"feature_share": choice}, "wall_s": round(time.time() - t0, 1), "load_average": round(load, 2)}
    a.results.mkdir(parents=True, exist_ok=True)
    (a.results / "feature_screen.json").write_text(json.dumps(out, indent=1))
    lines = ["# Arm (g) screen: synthetic share r on the inner splits of folds 0-1", "",
             ("Rule (amendment of 2026-12-07, written before the run): the higher mean inner-val BMA wins; ties within "
              "0.005 -> the smaller r. The reported folds were not read."), "",
             "| fold | r | chosen l2 | inner-val BMA (g) | inner-val BMA of (a)'s own head | BMA per l2 |",
             "|---|---|---|---|---|---|"]
    for x in rows:
        lines.append(f"| {x['fold']} | {x['share']:g} | {x['l2']:g} | {x['val_balanced_accuracy']:.4f} | "
                     f"{x['a_val_balanced_accuracy']:.4f} | {x['l2_val_balanced_accuracy']} |")
    lines += ["", "Mean inner-val BMA: " + ", ".join(f"r={r:g}: {m:.4f}" for r, m in means.items()),
              "", f"**Choice: r = {choice:g}.** Wall time {out['wall_s']} s, load {load:.2f}.", ""]
    (a.results / "feature_screen.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
