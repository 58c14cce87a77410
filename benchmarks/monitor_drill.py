"""Monitoring drill: false-alarm rate on i.i.d. windows and detection rate per shift, on real held-out images.

    .venv/bin/python benchmarks/monitor_drill.py --data ../shared/data/dermamnist/dermamnist.npz \
        --work runs/monitor_drill --windows 50 --window-size 1000

Setup (all real DermaMNIST images): a quick classifier is trained on 4,000 train images
(tailsynth.monitor.drill; pass --model to reuse one); the other 3,007 train images plus the 1,003 val images
are split at random into a reference half (the model's reference records) and a live half.
Each window is drawn without replacement from the live half; in a shift scenario the live images of one
class are corrupted (or that class's share changed) before drawing. A window "flags" a class when the
per-class tests (tailsynth.monitor.stats) reject at family-wise alpha. Detection = the shifted class is
flagged; "alone" = it is the only class flagged (what the regeneration policy then acts on).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SCENARIOS = ["iid", "brightness:DF", "blur:DF", "hue:DF", "brightness:VASC", "blur:VASC", "hue:VASC",
             "share:DF=3", "share:VASC=3", "share:DF=5", "share:VASC=5", "share:DF=0.2", "share:VASC=0.2",
             "brightness:DF=1.2", "hue:DF=0.15", "blur:DF=0.08", "hue:VASC=0.15", "blur:VASC=0.08"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", default="runs/monitor_drill")
    ap.add_argument("--model", default=None, help="reuse a model folder (its reference is rebuilt on the ref half)")
    ap.add_argument("--windows", type=int, default=50)
    ap.add_argument("--window-size", type=int, default=1000)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--min-samples", type=int, default=10)
    ap.add_argument("--group-by", default="predicted", choices=["predicted", "label"])
    ap.add_argument("--scenarios", nargs="*", default=SCENARIOS)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from tailsynth.classify.model import load_classifier
    from tailsynth.monitor.drill import drill_manifest, sample_window, train_quick_classifier
    from tailsynth.hashing import model_version
    from tailsynth.monitor.records import read_records, records_frame
    from tailsynth.predictions import Embedder
    from tailsynth.monitor.reference import build_reference, reference_path
    from tailsynth.monitor.score import apply_shifts, load_split, parse_shift, score_arrays
    from tailsynth.monitor.stats import DriftSettings, evaluate_window

    torch.set_num_threads(2)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    manifest = work / "manifest.csv"
    t0 = time.time()
    sizes = drill_manifest(args.data, manifest, seed=args.seed)
    model = Path(args.model) if args.model else work / "model"
    train_info = None
    if not (model / "model.pt").is_file():
        train_info = train_quick_classifier(args.data, manifest, model, epochs=args.epochs, seed=args.seed)
    ref_info = build_reference(model, args.data, split="ref", splits=manifest)
    classes = load_classifier(model)[1].classes
    ref_df = records_frame(read_records(reference_path(model)), classes)

    net, meta = load_classifier(model)
    emb, version = Embedder.load(model), model_version(model)
    _, images, labels = load_split(args.data, "live", manifest)
    base = score_arrays(net, meta, images, embedder=emb, version=version, labels=labels)
    labels_arr = np.asarray(labels)
    settings = DriftSettings(alpha=args.alpha, min_samples=args.min_samples, group_by=args.group_by)

    results = {}
    for sc in args.scenarios:
        if sc == "iid":
            pool, target = base, None
        else:
            sh = parse_shift(sc, classes)
            target = sh.cls
            if sh.name == "share":
                _, rows = apply_shifts(images, labels, [sh], seed=args.seed)
                pool = [base[i] for i in rows]
            else:
                # Only the corrupted class needs new predictions; the rest of the pool is unchanged.
                rows = np.flatnonzero(labels_arr == sh.cls)
                shifted, _ = apply_shifts(images[rows], labels_arr[rows], [sh])
                new = score_arrays(net, meta, shifted, embedder=emb, version=version, labels=list(labels_arr[rows]))
                pool = list(base)
                for i, r in zip(rows, new):
                    pool[i] = r
        rng = np.random.default_rng(args.seed + 1)
        flagged_any = hit = alone = 0
        flag_counts: dict[str, int] = {}
        t = time.time()
        for _ in range(args.windows):
            win = records_frame(sample_window(pool, args.window_size, rng), classes)
            res = evaluate_window(ref_df, win, classes, settings)
            fl = res["flagged"]
            flagged_any += bool(fl)
            for c in fl:
                flag_counts[c] = flag_counts.get(c, 0) + 1
            if target:
                hit += target in fl
                alone += fl == [target]
        n = args.windows
        results[sc] = {"windows": n, "any_flag_rate": flagged_any / n, "flag_counts": flag_counts,
                       "seconds": round(time.time() - t, 1)}
        if target:
            results[sc].update(detection_rate=hit / n, alone_rate=alone / n)
        print(sc, json.dumps(results[sc]), flush=True)

    live_counts = {c: int((labels_arr == c).sum()) for c in classes}
    pred_counts = {c: int(sum(r["predicted"] == c for r in base)) for c in classes}
    out = {"data": args.data, "split_sizes": sizes, "model": str(model), "train": train_info, "reference": ref_info,
           "settings": vars(settings) | {"image_stats": list(settings.image_stats)},
           "window_size": args.window_size, "live_label_counts": live_counts, "live_predicted_counts": pred_counts,
           "results": results, "seconds": round(time.time() - t0, 1)}
    (work / f"drill_{args.group_by}.json").write_text(json.dumps(out, indent=2))
    print(json.dumps({k: out[k] for k in ("live_label_counts", "live_predicted_counts", "seconds")}))


if __name__ == "__main__":
    main()
