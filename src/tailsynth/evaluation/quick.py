"""`tailsynth experiment` without --folds: methods x seeds on one dataset -> one comparison table (markdown + CSV),
mean ± std per metric and per class, read on the source's val split (where the trainer also picks its epoch).

The quick look; the replicate protocol (methods.py: epoch and τ chosen on an inner split, reported on held-out
folds) is what a result is claimed on. Kept beside it, with its own outputs, because committed tables
(docs/results/classifier_comparison*) were made with it.

Each run trains into OUT/runs/<method>/seed<k>/ and is skipped when its metrics exist, so an interrupted
experiment continues where it stopped. Post-hoc methods re-score an already trained model (no training).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..classify.folders import TrainedClassifier
from ..classify.methods import METHODS
from ..errors import ConfigError
from .results import COMPARISON_TABLE

HEADLINE = ("balanced_accuracy", "accuracy", "macro_auc", "ece")


# Per run (long form), per method (mean, std), the summary as JSON. The summary was named like the run report's
# arms table (`pipeline_report.COMPARISON_FILE`, another schema) before that table took the name alone.
COMPARISON_RUNS = "comparison_runs.csv"
COMPARISON_SUMMARY = "comparison_summary.csv"
COMPARISON_JSON = "comparison.json"


def _ms(vals: Sequence) -> tuple[float | None, float | None]:
    v = np.array([np.nan if x is None else x for x in vals], dtype=np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return None, None
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _pm(mean, std) -> str:
    return "–" if mean is None else f"{mean:.3f} ± {std:.3f}"


def run_experiment(data, out, methods: Sequence[str] | None = None, seeds: Sequence[int] = (0, 1, 2),
                   backbone: str = "resnet18", epochs: int | None = None, splits=None, quiet: bool = False,
                   note: str = "", **train_kw) -> dict:
    """Train every method for every seed (same backbone, epochs and recipe) and write comparison.{md,csv}.

    Returns {"runs": [...one row per run...], "summary": {method: {...}}, "table": path}.
    """
    from ..classify.evaluate import evaluate_model
    from ..classify.train import train_classifier

    methods = list(methods or [m for m in METHODS])
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Post-hoc methods need their base model: train the base even when not listed.
    order = []
    for m in methods:
        b = METHODS[m].base
        if b and b not in order:
            order.append(b)
        if m not in order:
            order.append(m)
    rows = []
    for seed in seeds:
        for name in order:
            meth = METHODS[name]
            run_dir = out / "runs" / name / f"seed{seed}"
            run_folder = TrainedClassifier(run_dir)
            t0 = time.time()
            if not run_folder.is_evaluated():
                if meth.base:
                    base_dir = out / "runs" / meth.base / f"seed{seed}"
                    evaluate_model(base_dir, data, "val", run_dir, splits=splits, posthoc_tau=meth.posthoc_tau,
                                   bootstrap=0, plots=False, seed=seed)
                else:
                    train_classifier(data, run_dir, backbone=backbone, loss=meth.loss, sampler=meth.sampler,
                                     epochs=epochs, seed=seed, splits=splits, quiet=quiet, write_reports=False,
                                     resume=True, **{**meth.train_kw, **train_kw})
            m = run_folder.metrics()
            if name in methods:
                rows.append({"method": name, "seed": seed, "metrics": m, "wall_s": round(time.time() - t0, 1)})
            if not quiet:
                print(f"[{name} seed {seed}] bacc {m['balanced_accuracy']:.4f} acc {m['accuracy']:.4f} "
                      f"auc {m['macro_auc']:.4f}", flush=True)
    return write_comparison(rows, out, header=note or _header(data, backbone, epochs, seeds, train_kw))


def _header(data, backbone, epochs, seeds, train_kw) -> str:
    kw = ", ".join(f"{k}={v}" for k, v in sorted(train_kw.items()))
    return (f"data: {data} (val split) · backbone: {backbone} · epochs: {epochs or 'default'} · "
            f"seeds: {list(seeds)}{' · ' + kw if kw else ''}")


def write_comparison(rows: list[dict], out, header: str = "") -> dict:
    out = Path(out)
    if not rows:
        raise ConfigError("no runs to compare")
    classes = rows[0]["metrics"]["classes"]
    support = {c: rows[0]["metrics"]["per_class"][c]["support"] for c in classes}
    rarest = min(classes, key=lambda c: support[c] if support[c] > 0 else 10**9)
    methods = list(dict.fromkeys(r["method"] for r in rows))

    # One row per run (long form), then the summary.
    with open(out / COMPARISON_RUNS, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seed", *HEADLINE, *[f"recall_{c}" for c in classes]])
        for r in rows:
            m = r["metrics"]
            w.writerow([r["method"], r["seed"], *[m.get(k) for k in HEADLINE],
                        *[m["per_class"][c]["recall"] for c in classes]])
    summary = {}
    for meth in methods:
        ms = [r["metrics"] for r in rows if r["method"] == meth]
        s = {k: _ms([m.get(k) for m in ms]) for k in HEADLINE}
        s.update({f"recall_{c}": _ms([m["per_class"][c]["recall"] for m in ms]) for c in classes})
        s["n_seeds"] = len(ms)
        summary[meth] = s
    with open(out / COMPARISON_SUMMARY, "w", newline="") as f:
        w = csv.writer(f)
        keys = [*HEADLINE, *[f"recall_{c}" for c in classes]]
        w.writerow(["method", "n_seeds", *[f"{k}_{x}" for k in keys for x in ("mean", "std")]])
        for meth, s in summary.items():
            w.writerow([meth, s["n_seeds"], *[v for k in keys for v in s[k]]])

    best_bacc = max(summary, key=lambda k: summary[k]["balanced_accuracy"][0] or -1)
    best_rare = max(summary, key=lambda k: summary[k][f"recall_{rarest}"][0] or -1)

    def bold_if(cond: bool, s: str) -> str:
        return f"**{s}**" if cond else s

    lines = []
    if header:
        lines += [header, ""]
    lines += [(f"Rarest class: **{rarest}** (val support {support[rarest]}). Mean ± std over seeds; "
               "best balanced accuracy and best rarest-class recall in bold."), "",
              f"| method | seeds | balanced acc | {rarest} recall (rarest) | accuracy | macro AUC | ECE |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for meth, s in summary.items():
        lines.append(
            f"| {meth} | {s['n_seeds']} | {bold_if(meth == best_bacc, _pm(*s['balanced_accuracy']))} | "
            f"{bold_if(meth == best_rare, _pm(*s[f'recall_{rarest}']))} | {_pm(*s['accuracy'])} | "
            f"{_pm(*s['macro_auc'])} | {_pm(*s['ece'])} |")
    lines += ["", "Per-class recall (mean ± std):", "",
              "| method | " + " | ".join(f"**{c}** (n={support[c]})" if c == rarest else f"{c} (n={support[c]})"
                                     for c in classes) + " |",
              "|---|" + "---:|" * len(classes)]
    for meth, s in summary.items():
        lines.append(f"| {meth} | " + " | ".join(_pm(*s[f"recall_{c}"]) for c in classes) + " |")
    notes = [f"- {m}: {METHODS[m].note}" for m in methods if m in METHODS and METHODS[m].note]
    if notes:
        lines += ["", "Methods:", "", *notes]
    table = out / COMPARISON_TABLE
    table.write_text("\n".join(lines) + "\n")
    (out / COMPARISON_JSON).write_text(json.dumps({"header": header, "rarest_class": rarest, "summary": summary},
                                                    indent=1))
    return {"runs": [{k: v for k, v in r.items() if k != "metrics"} for r in rows], "summary": summary,
            "table": str(table), "rarest_class": rarest}
