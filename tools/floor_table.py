"""The selection floor on a synthesizer's candidates: the share that passes per class and mode, and whether what
passes is better labelled than random candidates of the same count (docs/results/ood_selection.md).

    python tools/floor_table.py --real SOURCE [--splits CSV] --classifier CLF_DIR --synthesizer NAME \
        --candidates inpaint=GEN_DIR --candidates harmonize=GEN_DIR --out runs/floor_NAME.json

Prints a markdown table and writes the figures as JSON. Label fidelity: the share of candidates whose top-1 class
under the real-only classifier is the intended one; random: the mean (sd) over 20 random subsets of the passing
count drawn from all candidates of the class (`ood.clean.kept_vs_chance`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def measure(candidates: Path, real: str, splits, classifier, floor) -> dict:
    from tailsynth.ood.clean import kept_vs_chance
    from tailsynth.ood.floor import FLOOR_REASONS, apply_floor
    from tailsynth.ood.select import score_candidates

    sc = score_candidates(candidates, real, classifier, splits=splits)
    fr = apply_floor(sc, floor)
    real_by_class = {c: sc.train_features[sc.train_cls == c] for c in set(sc.cls_idx.tolist())}
    chance = kept_vs_chance(real_by_class, sc.features, sc.probs, sc.cls_idx, fr.passed)
    out = {}
    for c, e in chance.items():
        m = sc.cls_idx == c
        out[sc.class_names[c]] = {**e, "real_pass_rate": fr.real_pass.get(c),
                                  "rejected": {r: int((m & fr.reasons[r]).sum()) for r in FLOOR_REASONS}}
    return out


def markdown(synthesizer: str, figures: dict) -> str:
    lines = ["| synthesizer | mode | class | candidates | passing the floor | share | real held-out passing | "
             "label fidelity: passing | all | random, same count | rejected by |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for mode, per_class in figures.items():
        for cls, e in per_class.items():
            n, k = e["n_candidates"], e["n_kept"]
            rej = ", ".join(f"{r.replace('_', ' ')} {v}" for r, v in e["rejected"].items() if v)
            lines.append(f"| {synthesizer} | {mode} | {cls} | {n} | {k} | {k / n:.2f} | {e['real_pass_rate']:.2f} | "
                         f"{e['label_fidelity_kept']:.3f} | {e['label_fidelity_all']:.3f} | "
                         f"{e['label_fidelity_random']:.3f} ({e['label_fidelity_random_sd']:.3f}) | {rej} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from tailsynth.classify.model import feature_model
    from tailsynth.ood.floor import Floor
    from tailsynth.ood.select import jsonable

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", required=True)
    ap.add_argument("--splits")
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--synthesizer", required=True, help="the name in the table (e.g. models/synth-ham64)")
    ap.add_argument("--candidates", action="append", required=True, help="MODE=GEN_DIR, repeatable")
    ap.add_argument("--floor-quantile", type=float, default=0.95)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    t0 = time.time()
    clf, floor = feature_model(a.classifier), Floor(quantile=a.floor_quantile)
    figures = {}
    for spec in a.candidates:
        mode, _, folder = spec.partition("=")
        if not folder:
            ap.error(f"--candidates {spec!r}: expected MODE=GEN_DIR")
        figures[mode] = measure(Path(folder), a.real, a.splits, clf, floor)
    md = markdown(a.synthesizer, figures)
    Path(a.out).write_text(json.dumps(jsonable({"synthesizer": a.synthesizer, "classifier": a.classifier,
                                                "floor": floor.settings(), "candidates": a.candidates,
                                                "figures": figures, "wall_s": round(time.time() - t0, 1)}),
                                      indent=2))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
