"""Keep what an `experiment-augment` folder's result rests on in a committed results folder, and put it back.

`keep`: the results table and JSON, the experiment's config, every run's held-out predictions (fp16
probabilities, about 25 KB a fold) and the feature arms' records go to RESULTS, so the paired comparisons can be
recomputed (`experiment-augment --collect-only`) when the run folders are gone: another machine, another session.
`restore`: the kept predictions back into an experiment folder (a finished run is then not trained again; its model
is not kept, so arms that read it, (g) and the candidates' scoring, need (a) retrained).

    .venv/bin/python tools/keep_experiment.py keep --experiment ../runs_aug_ham --results docs/results/augmentation_ham
    .venv/bin/python tools/keep_experiment.py restore --experiment ../runs_aug_ham --results docs/results/augmentation_ham
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

TOP_FILES = ("results.json", "table.md", "experiment_config.json")


def _copy_npz(src: Path, dst: Path, dtype) -> None:
    with np.load(src) as z:
        data = {k: z[k] for k in z.files}
    data["probs"] = data["probs"].astype(dtype)
    dst.parent.mkdir(parents=True, exist_ok=True)
    (np.savez_compressed if dtype == np.float16 else np.savez)(dst, **data)


def keep(experiment: Path, results: Path) -> list[Path]:
    from tailsynth.evaluation.feature_arm import FEATURE_ARM_FILE
    from tailsynth.evaluation.predictions import PREDICTIONS

    results.mkdir(parents=True, exist_ok=True)
    kept = []
    for name in TOP_FILES:
        if (experiment / name).is_file():
            shutil.copy2(experiment / name, results / name)
            kept.append(results / name)
    for run in sorted((experiment / "runs").glob("*/*")):
        arm, tag = run.parent.name, run.name
        for part in ("test", "eval"):
            src = run / PREDICTIONS.format(part=part)
            if src.is_file():
                dst = results / "predictions" / arm / f"{tag}_{part}.npz"
                _copy_npz(src, dst, np.float16)
                kept.append(dst)
        if (run / FEATURE_ARM_FILE).is_file():
            dst = results / "records" / arm / f"{tag}.json"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run / FEATURE_ARM_FILE, dst)
            kept.append(dst)
    return kept


def restore(experiment: Path, results: Path) -> list[Path]:
    from tailsynth.evaluation.predictions import PREDICTIONS

    restored = []
    for src in sorted((results / "predictions").glob("*/*.npz")):
        tag, part = src.stem.rsplit("_", 1)
        dst = experiment / "runs" / src.parent.name / tag / PREDICTIONS.format(part=part)
        if not dst.is_file():
            _copy_npz(src, dst, np.float32)
            restored.append(dst)
    return restored


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=("keep", "restore"))
    ap.add_argument("--experiment", required=True, type=Path)
    ap.add_argument("--results", required=True, type=Path)
    a = ap.parse_args()
    done = (keep if a.action == "keep" else restore)(a.experiment, a.results)
    print(f"{a.action}: {len(done)} file(s)")


if __name__ == "__main__":
    main()
