"""Does real + selected synthetic data beat the best real-only method? (`tailsynth experiment-augment`)

Arms, all with the same backbone, loss, sampler, epochs and seeds:
  (a) real      the best real-only long-tail method, real data only
  (b) random    + synthetic without OOD selection: a uniformly random subset with the same per-class counts as (c)
  (c) ood       + synthetic kept by OOD post-selection at gamma
  (d) oversample real oversampling: copies of real training images of each class, the same per-class counts as (c)
plus the gamma sweep of (c). gamma = 1.0 keeps every candidate that is not a near-copy of a training image, i.e. all
synthetic data without score-based selection.

Every run is a `train_classifier` call writing its own model folder; a finished run (metrics.json present) is
skipped, so an interrupted experiment resumes where it stopped.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from ..errors import ConfigError

ARMS = ("real", "random", "ood", "oversample")
ARM_LABELS = {"real": "(a) real only", "random": "(b) + synthetic, no selection (random, matched counts)",
              "ood": "(c) + synthetic, OOD-selected", "oversample": "(d) real oversampling, matched counts"}


RATE = (0.0, 1.0)


def _t95(n: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1)) if n > 1 else math.nan


def summarize(values, bounds: tuple[float, float] | None = None) -> dict:
    """Mean, sample std and a 95% t-interval over seeds (clipped to `bounds` for bounded metrics)."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": [None, None]}
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if len(v) > 1 else math.nan
    half = _t95(len(v)) * std / math.sqrt(len(v)) if len(v) > 1 else math.nan
    lo, hi = mean - half, mean + half
    if bounds is not None and len(v) > 1:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"n": len(v), "mean": mean, "std": std, "ci95": [lo, hi]}


def oversample_manifest(data, counts: dict[str, int], out_dir: Path, seed: int = 0, splits=None) -> Path:
    """Copies of real training images (lossless PNG), `counts[c]` of class c, cycling through a seeded
    permutation so every image is repeated as evenly as possible; returns a trainer manifest for them."""
    from PIL import Image

    from ..classify.train import prepare_data

    ds, _ = prepare_data(data, splits=splits, seed=0)
    train = ds.split("train")
    rng = np.random.default_rng(seed)
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for cls, n in counts.items():
        recs = [r for r in train.records if r.label == cls]
        if n and not recs:
            raise ConfigError(f"{data}: no real training images of class {cls} to oversample")
        order = rng.permutation(len(recs)) if recs else []
        for k in range(n):
            r = recs[int(order[k % len(recs)])]
            p = img_dir / f"{r.image_id}.png"
            if not p.exists():
                Image.fromarray(train.image(r)).save(p)  # PNG: lossless, the copy is the real image
            rows.append((str(p.resolve()), cls))
    man = out_dir / "manifest.csv"
    with open(man, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "class"])
        w.writerows(rows)
    return man


def random_matched(sc, counts: dict[str, int], seed: int = 0) -> np.ndarray:
    """A uniformly random subset of all candidates (memorized ones included: no selection at all)."""
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(sc.ids), bool)
    classes = np.array(sc.classes)
    for cls, n in counts.items():
        members = np.flatnonzero(classes == cls)
        keep[rng.choice(members, size=min(n, len(members)), replace=False)] = True
    return keep


def _run(data, out: Path, manifest, seed: int, common: dict, log, collect_only: bool = False) -> dict | None:
    from ..classify.train import train_classifier

    mfile = out / "metrics.json"
    if mfile.is_file():
        log(f"  {out}: done already, reusing")
        return json.loads(mfile.read_text())
    if collect_only:
        log(f"  {out}: not run yet, left out of the table")
        return None
    log(f"  training {out} ...")
    return train_classifier(data, out, seed=seed, synthetic_manifest=str(manifest) if manifest else None, **common)


def _run_all(data, tasks, common: dict, jobs: int, log, collect_only: bool = False) -> list[dict | None]:
    """Train every task; with jobs > 1 in that many worker processes (each single-threaded unless told)."""
    if jobs <= 1 or collect_only:
        return [_run(data, d, m, s, common, log, collect_only) for _, s, d, m in tasks]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    log(f"training {len(tasks)} runs in {jobs} worker processes")
    # spawn: a forked torch process can deadlock in its thread pool.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as ex:
        futs = [ex.submit(_run, data, d, m, s, common, print) for _, s, d, m in tasks]
        return [f.result() for f in futs]


def _gtag(g: float) -> str:
    return f"g{g:.2f}".replace(".", "p")


def run_augmentation_experiment(data, candidates, out, seeds=(0, 1, 2), gammas=(0.2, 0.4, 0.6, 1.0),
                                main_gamma: float = 0.4, backbone: str = "resnet18", loss: str = "ce",
                                sampler: str | None = None, epochs: int | None = None, resolution: int | None = None,
                                score: str = "mahalanobis", classifier=None, splits=None, arms=ARMS,
                                sweep: bool = True, train_kw: dict | None = None, quiet: bool = False,
                                jobs: int = 1, collect_only: bool = False, sweep_seeds=None) -> dict:
    """Train (or, with collect_only, only gather finished) runs of every arm; write results.json and table.md."""
    from .select import _jsonable, choose, quality_summary, score_candidates, write_manifest, write_scores

    bad = [a for a in arms if a not in ARMS]
    if bad:
        raise ConfigError(f"unknown arm(s) {bad}; choose from {', '.join(ARMS)}")
    if not seeds:
        raise ConfigError("need at least one seed (three or more for intervals)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in seeds]
    gammas = sorted({float(g) for g in gammas} | {float(main_gamma)})
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    common = {"backbone": backbone, "loss": loss, "sampler": sampler, "epochs": epochs, "resolution": resolution,
              "splits": splits, "quiet": True, "write_reports": False, **(train_kw or {})}
    config = {"data": str(data), "candidates": str(candidates), "seeds": seeds, "gammas": gammas,
              "main_gamma": main_gamma, "score": score, "arms": list(arms),
              "sweep_seeds": list(sweep_seeds) if sweep_seeds is not None else seeds, **{k: v for k, v in common.items()
                                                                                if k not in ("quiet", "write_reports")}}
    (out / "experiment_config.json").write_text(json.dumps(config, indent=1, default=str))
    runs_dir = out / "runs"
    results: dict = {}

    # (a) first: its first seed is the real-data classifier that scores the candidates (unless one is given).
    log("arm (a) real only")
    if not classifier:
        _run(data, runs_dir / "real" / f"seed{seeds[0]}", None, seeds[0], common, log)
    scorer = Path(classifier) if classifier else runs_dir / "real" / f"seed{seeds[0]}"

    log(f"scoring candidates with {scorer}")
    sc = score_candidates(candidates, data, scorer, splits=splits)
    sel_dir = out / "selection"
    sel_dir.mkdir(exist_ok=True)
    manifests, kept_counts, quality = {}, {}, {}
    for g in gammas:
        kept, _, _ = choose(sc, gamma=g, score=score)
        tag = _gtag(g)
        manifests[("ood", g)] = write_manifest(sc.paths, sc.classes, kept, sel_dir / f"ood_{tag}.csv")
        counts = {c: int(((np.array(sc.classes) == c) & kept).sum()) for c in sorted(set(sc.classes))}
        kept_counts[g] = counts
        quality[g] = quality_summary(sc, kept)
        if g == main_gamma:
            write_scores(sc, kept, sel_dir)
            manifests[("random", g)] = write_manifest(sc.paths, sc.classes, random_matched(sc, counts, seed=0),
                                                      sel_dir / f"random_{tag}.csv")
            manifests[("oversample", g)] = oversample_manifest(data, counts, out / "oversample", seed=0, splits=splits)
    (sel_dir / "quality_by_gamma.json").write_text(json.dumps(_jsonable({str(g): q for g, q in quality.items()}), indent=1))
    (sel_dir / "kept_counts.json").write_text(json.dumps({str(g): c for g, c in kept_counts.items()}, indent=1))

    # Main arms seed by seed, then the sweep, so an interrupted run still has complete seeds for every arm.
    tasks = []  # (result key, seed, run folder, manifest)
    for s in seeds:
        for arm in arms:
            if arm == "real":
                tasks.append(("real", s, runs_dir / "real" / f"seed{s}", None))
            else:
                tasks.append((f"{arm}@{main_gamma:g}", s, runs_dir / f"{arm}_{_gtag(main_gamma)}" / f"seed{s}",
                              manifests[(arm, main_gamma)]))
    if sweep and "ood" in arms:
        for s in (seeds if sweep_seeds is None else [int(x) for x in sweep_seeds]):
            for g in gammas:
                if g != main_gamma:
                    tasks.append((f"ood@{g:g}", s, runs_dir / f"ood_{_gtag(g)}" / f"seed{s}", manifests[("ood", g)]))
    for (key, s, _, _), m in zip(tasks, _run_all(data, tasks, common, jobs, log, collect_only)):
        if m is not None:
            results.setdefault(key, {})[s] = m

    table = build_table(results, sc.class_names, kept_counts, main_gamma)
    (out / "results.json").write_text(json.dumps(_jsonable(table), indent=1))
    md = render_markdown(table, config)
    (out / "table.md").write_text(md)
    return {"table": table, "table_path": str(out / "table.md"), "markdown": md}


def build_table(results: dict, classes: list[str], kept_counts: dict, main_gamma: float) -> dict:
    rows = {}
    real_runs = results.get("real", {})
    for key, runs in results.items():
        seeds = sorted(runs)
        ms = [runs[s] for s in seeds]
        rarest = ms[0].get("rarest_class") if ms else None
        row = {
            "seeds": seeds,
            "balanced_accuracy": summarize([m["balanced_accuracy"] for m in ms], RATE),
            "accuracy": summarize([m["accuracy"] for m in ms], RATE),
            "macro_auc": summarize([m.get("macro_auc") for m in ms], RATE),
            "rarest_class": rarest,
            "rarest_recall": summarize([m["per_class"][rarest]["recall"] for m in ms], RATE) if rarest else None,
            "per_class_recall": {c: summarize([m["per_class"][c]["recall"] for m in ms], RATE) for c in classes},
            "per_seed_balanced_accuracy": {str(s): runs[s]["balanced_accuracy"] for s in seeds},
        }
        paired = [runs[s]["balanced_accuracy"] - real_runs[s]["balanced_accuracy"] for s in seeds if s in real_runs]
        row["delta_vs_real_balanced_accuracy"] = summarize(paired) if key != "real" else None
        if "@" in key:
            g = float(key.split("@")[1])
            row["gamma"] = g
            row["synthetic_per_class"] = kept_counts.get(g, kept_counts.get(main_gamma))
        rows[key] = row
    return {"rows": rows, "classes": classes, "main_gamma": main_gamma}


def _ms(s: dict | None, digits: int = 3) -> str:
    if not s or s.get("mean") is None:
        return "–"
    if s["n"] > 1 and s["std"] is not None and math.isfinite(s["std"]):
        return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} [{s['ci95'][0]:.{digits}f}, {s['ci95'][1]:.{digits}f}]"
    return f"{s['mean']:.{digits}f}"


def render_markdown(table: dict, config: dict) -> str:
    rows, classes, g = table["rows"], table["classes"], table["main_gamma"]
    order = ["real", f"random@{g:g}", f"ood@{g:g}", f"oversample@{g:g}"]
    label = {"real": ARM_LABELS["real"], f"random@{g:g}": ARM_LABELS["random"] + f", γ={g:g}",
             f"ood@{g:g}": ARM_LABELS["ood"] + f", γ={g:g}", f"oversample@{g:g}": ARM_LABELS["oversample"] + f", γ={g:g}"}
    lines = ["Values: mean ± sample std over seeds [95% t-interval over seeds]; Δ is paired per seed against (a).", "",
             "| arm | seeds | balanced accuracy | Δ bal. acc. vs (a) | rarest-class recall | accuracy |",
             "|---|---|---|---|---|---|"]
    for k in [k for k in order if k in rows]:
        r = rows[k]
        rare = f"{r['rarest_class']}: {_ms(r['rarest_recall'])}" if r["rarest_recall"] else "–"
        lines.append(f"| {label[k]} | {len(r['seeds'])} | {_ms(r['balanced_accuracy'])} | "
                     f"{_ms(r['delta_vs_real_balanced_accuracy'])} | {rare} | {_ms(r['accuracy'])} |")
    lines += ["", "Per-class recall (mean ± std over seeds):", "",
              "| arm | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for k in [k for k in order if k in rows]:
        pc = rows[k]["per_class_recall"]
        lines.append(f"| {label[k]} | " + " | ".join(
            f"{pc[c]['mean']:.3f} ± {pc[c]['std']:.3f}" if pc[c]["mean"] is not None and pc[c]["n"] > 1
            else _ms(pc[c]) for c in classes) + " |")
    sweep = sorted((r["gamma"], k) for k, r in rows.items() if k.startswith("ood@"))
    if sweep:
        lines += ["", "γ sweep of arm (c):", "",
                  "| γ | synthetic kept (per class) | seeds | balanced accuracy | Δ vs (a) | rarest-class recall |",
                  "|---|---|---|---|---|---|"]
        for gg, k in sweep:
            r = rows[k]
            kept = ", ".join(f"{c} {n}" for c, n in (r.get("synthetic_per_class") or {}).items())
            rare = f"{r['rarest_class']}: {_ms(r['rarest_recall'])}" if r["rarest_recall"] else "–"
            lines.append(f"| {gg:g} | {kept} | {len(r['seeds'])} | {_ms(r['balanced_accuracy'])} | "
                         f"{_ms(r['delta_vs_real_balanced_accuracy'])} | {rare} |")
    lines += ["", "Config: `" + json.dumps({k: config[k] for k in sorted(config)}, default=str) + "`", ""]
    return "\n".join(lines)
