"""Do inpainted, OOD-selected tail lesions beat the best real-only training? (`tailsynth experiment-augment`)

Arms, all with the same backbone, epochs, augmentation, seeds and image sets (see protocol.py):
  (a) real         the best real-only long-tail method (a name from `classify.experiment.METHODS`)
  (b) cmo          (a) + CMO: real tail lesions, cut out by their lesion masks, pasted onto head-class images
                   during training, labels mixed by area (Park et al., CVPR 2022)
  (c) prior-shift  (a) with real images oversampled to exactly the per-class draws of (e): the prior-shift control
  (d) random       (a) + synthetic candidates chosen at random, the same per-class counts as (e)
  (e) ood          (a) + synthetic candidates kept by OOD post-selection at gamma
  (f) harmonized   (a) + OOD-selected candidates from a second folder (`generate --mode harmonize`)
Optionally more gammas for (e) (`gammas`).

Per replicate, (a) trains first; its model scores the candidates (selection never sees the reported images),
then the other arms train. Every run is one `train_classifier` call in its own folder; a finished run is reused,
so an interrupted experiment resumes. results.json holds per-arm means, paired Δ vs (a) and between the arms
the decision rule names, with bootstrap intervals and McNemar p-values, and the verdict of the rule.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..data.classes import TAIL_CLASSES
from ..errors import ConfigError
from .protocol import (
    HEADLINE,
    PREDICTIONS,
    Replicate,
    arm_table,
    compare,
    load_predictions,
    make_replicates,
    predict_part,
    save_predictions,
    tune_posthoc_tau,
)

ARMS = ("real", "cmo", "prior-shift", "random", "ood", "harmonized")
SYNTHETIC_ARMS = ("random", "ood", "harmonized")
ARM_LABELS = {"real": "(a) best real-only", "cmo": "(b) CMO (real tail lesions on head backgrounds)",
              "prior-shift": "(c) prior-shift control (real, (e)'s class draws)",
              "random": "(d) random synthetic, (e)'s counts", "ood": "(e) OOD-selected synthetic",
              "harmonized": "(f) harmonized synthetic, OOD-selected"}
# The comparisons the decision rule reads (besides every arm vs (a)).
CONTRASTS = (("ood", "prior-shift"), ("ood", "random"), ("ood", "cmo"), ("harmonized", "prior-shift"),
             ("harmonized", "ood"), ("harmonized", "cmo"))


def random_matched(sc, counts: dict[str, int], seed: int = 0, allowed: np.ndarray | None = None) -> np.ndarray:
    """A uniformly random subset of the allowed candidates (memorized ones included: no selection at all)."""
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(sc.ids), bool)
    classes = np.array(sc.classes)
    ok = np.ones(len(sc.ids), bool) if allowed is None else np.asarray(allowed, bool)
    for cls, n in counts.items():
        members = np.flatnonzero((classes == cls) & ok)
        keep[rng.choice(members, size=min(n, len(members)), replace=False)] = True
    return keep


def copies_reported_images(sc, data, manifest: Path, pixel_size: int = 32) -> np.ndarray:
    """Candidates that are near-copies of an image of the replicate's reported part. Memorization is checked
    against the training images; a synthesizer trained on lesions that a fold reports can also re-emit one of
    those, which would put a reported image into training. Same descriptor and threshold as the memorization
    check (ood.memorize)."""
    from ..data import load_source
    from .memorize import descriptor_nn, descriptors, pixel_vectors
    from .select import _shrink

    ds = load_source(data, splits=manifest)
    if "test" not in ds.splits or not len(sc.ids):
        return np.zeros(len(sc.ids), bool)
    res = int(sc.info["resolution"])
    x, _ = ds.split("test").arrays(res)
    d, _ = descriptor_nn(descriptors(pixel_vectors(_shrink(sc.images, pixel_size))),
                         descriptors(pixel_vectors(_shrink(x, pixel_size))))
    return d <= sc.memo.copy_threshold


def _clean_kept(sc, options: dict) -> np.ndarray:
    from .clean import DEFAULT_BAND, DEFAULT_CONFIDENCE, Prototypes, clean_mask

    protos = Prototypes.fit(sc.train_features, sc.train_cls, len(sc.class_names))
    kept, _ = clean_mask(sc.features, sc.probs, sc.cls_idx, sc.memo.memorized, protos,
                         confidence=options.get("confidence", DEFAULT_CONFIDENCE),
                         band=tuple(options.get("band", DEFAULT_BAND)))
    return kept


def touches_reported_images(folder, ids: list[str], manifest: Path, data=None) -> np.ndarray:
    """Candidates painted on (or harmonized from) a lesion of the replicate's reported part: they would carry
    a reported lesion's pixels into training, so they are never used in that replicate. With `data`, images are
    matched by lesion (any image of a reported lesion counts); without it, by image id."""
    from ..data.source import read_split_manifest
    from .candidates import read_candidates

    c = read_candidates(folder)
    assign = read_split_manifest(manifest)
    group = {}
    if data is not None:
        from ..data import load_source

        group = {r.image_id: r.group_id for r in load_source(data).records}
    reported = {group.get(i, i) for i, s in assign.items() if s == "test"}
    src = c.source_ids or [""] * len(c.ids)
    leak = {cid for cid, b, sid in zip(c.ids, c.background_ids, src)
            if group.get(b, b) in reported or (sid and group.get(sid, sid) in reported)}
    return np.array([i in leak for i in ids], dtype=bool)


def baseline_spec(name: str) -> dict:
    """Training options and post-hoc flag of the real-only method `name`."""
    from ..classify.experiment import METHODS

    if name not in METHODS:
        raise ConfigError(f"unknown baseline {name!r}; choose one of {', '.join(METHODS)}")
    m = METHODS[name]
    if m.base:  # a post-hoc method trains its base method; τ is tuned on the inner val split
        base = METHODS[m.base]
        return {"loss": base.loss, "sampler": base.sampler, "train_kw": dict(base.train_kw), "posthoc": True}
    return {"loss": m.loss, "sampler": m.sampler, "train_kw": dict(m.train_kw), "posthoc": False}


def _gtag(g: float) -> str:
    return f"g{g:.2f}".replace(".", "p")


def _train_and_predict(task: dict, log=print) -> dict:
    """One run: train (unless finished), then predictions on the replicate's test part and on the eval source."""
    from ..classify.train import train_classifier

    run = Path(task["run_dir"])
    rep: Replicate = task["rep"]
    t0 = time.time()
    if not (run / "metrics.json").is_file():
        log(f"  training {run} ...")
        train_classifier(task["data"], run, seed=rep.seed, splits=rep.manifest, **task["train"])
    tau = None
    if task["posthoc"]:
        tau, _ = tune_posthoc_tau(run, task["data"], rep.manifest)
    test_file = run / PREDICTIONS.format(part="test")
    if not test_file.is_file():
        save_predictions(run, "test", predict_part(run, task["data"], "test", rep.manifest), tau)
    if task.get("eval_data") and not (run / PREDICTIONS.format(part="eval")).is_file():
        pred = predict_part(run, task["eval_data"], task["eval_split"], task.get("eval_splits"), drop_unknown=True)
        save_predictions(run, "eval", pred, tau)
    return {"run_dir": str(run), "wall_s": round(time.time() - t0, 1), "posthoc_tau": tau}


def _run_tasks(tasks: list[dict], jobs: int, log) -> list[dict]:
    if jobs <= 1 or len(tasks) <= 1:
        return [_train_and_predict(t, log) for t in tasks]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    log(f"training {len(tasks)} runs in {jobs} worker processes")
    # spawn: a forked torch process can deadlock in its thread pool.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as ex:
        return [f.result() for f in [ex.submit(_train_and_predict, t, print) for t in tasks]]


def run_augmentation_experiment(data, candidates, out, *, baseline: str = "class-balanced-sampler",
                                arms=ARMS, folds: int | None = None, seeds=(0,), gamma: float = 0.4,
                                gammas=(), harmonized_candidates=None, synthetic_ratio: float | None = None,
                                synthetic_weight: float = 1.0, synthetic_dose: str = "replace",
                                clean: dict | None = None, cmo: dict | None = None,
                                backbone: str = "resnet18", epochs: int | None = None,
                                resolution: int | None = None, score: str = "mahalanobis", classifier=None,
                                splits=None, inner_val: float = 0.15, split_seed: int = 0, eval_data=None,
                                eval_split: str = "test", eval_splits=None, tail=TAIL_CLASSES,
                                n_boot: int = 1000, train_kw: dict | None = None, quiet: bool = False,
                                jobs: int = 1, collect_only: bool = False) -> dict:
    """Train (or, with collect_only, only gather finished) runs of every arm; write results.json and table.md.

    `synthetic_dose` "add": synthetic draws come on top of (a)'s real epoch, and (c) is its replay control (the same
    extra draws, all real); "replace": they take a share of the class totals and (c) is the prior-shift control.
    `clean` (a dict of `select_candidates`' clean_* options, may be empty): arms (e)/(f) keep what the cleaning rule
    keeps instead of a gamma fraction; (d) still matches (e)'s counts."""
    from .select import _jsonable, choose, quality_summary, score_candidates, write_manifest

    arms = list(arms)
    bad = [a for a in arms if a not in ARMS]
    if bad:
        raise ConfigError(f"unknown arm(s) {bad}; choose from {', '.join(ARMS)}")
    if "real" not in arms:
        arms.insert(0, "real")  # every comparison is paired against (a)
    needs_synthetic = [a for a in arms if a in ("prior-shift", "random", "ood")] or list(gammas)
    if needs_synthetic and not candidates:
        raise ConfigError(f"arm(s) {needs_synthetic} need --candidates (a folder written by `tailsynth generate`)")
    if "harmonized" in arms and not harmonized_candidates:
        raise ConfigError("arm 'harmonized' needs --harmonized-candidates (a folder from `generate --mode harmonize`)")
    if not seeds:
        raise ConfigError("need at least one seed")
    if classifier:
        # A scorer trained on all the data has seen every reported image; allowed, but said loudly.
        print("warning: --classifier scores candidates with one model for every replicate; it may have seen the "
              "reported images. Leave it out to score each replicate with its own arm (a) model.", flush=True)
    base = baseline_spec(baseline)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    gammas = sorted({float(g) for g in gammas} - {float(gamma)})
    common = {"backbone": backbone, "loss": base["loss"], "sampler": base["sampler"], "epochs": epochs,
              "resolution": resolution, "split_seed": split_seed, "quiet": True, "write_reports": False,
              **base["train_kw"], **(train_kw or {})}
    syn = {"synthetic_ratio": synthetic_ratio, "synthetic_weight": synthetic_weight, "synthetic_dose": synthetic_dose}
    reps = make_replicates(data, out, folds=folds, seeds=[int(s) for s in seeds], splits=splits,
                           inner_val=inner_val, split_seed=split_seed)
    config = {"data": str(data), "candidates": str(candidates) if candidates else None,
              "harmonized_candidates": str(harmonized_candidates) if harmonized_candidates else None,
              "baseline": baseline, "arms": arms, "folds": folds, "seeds": [int(s) for s in seeds],
              "gamma": gamma, "gammas": gammas, "score": score, "inner_val": inner_val, "tail": list(tail),
              "eval_data": str(eval_data) if eval_data else None, "eval_split": eval_split, "n_boot": n_boot,
              "cmo": cmo or {}, **syn, **{k: v for k, v in common.items() if k not in ("quiet", "write_reports")}}
    (out / "experiment_config.json").write_text(json.dumps(config, indent=1, default=str))

    def task(arm_key: str, rep: Replicate, **train) -> dict:
        return {"run_dir": str(out / "runs" / arm_key / rep.tag), "rep": rep, "data": data,
                "train": {**common, **train}, "posthoc": base["posthoc"], "eval_data": eval_data,
                "eval_split": eval_split, "eval_splits": eval_splits}

    def finished(t: dict) -> bool:
        return (Path(t["run_dir"]) / PREDICTIONS.format(part="test")).is_file()

    def run(tasks: list[dict]) -> None:
        todo = [t for t in tasks if not finished(t) or (eval_data and not (
            Path(t["run_dir"]) / PREDICTIONS.format(part="eval")).is_file())]
        if collect_only:
            for t in todo:
                log(f"  {t['run_dir']}: not finished, left out of the tables")
            return
        _run_tasks(todo, jobs, log)

    # ---- (a) first: per replicate it is the scorer of the candidates --------------------------------------
    log(f"arm (a) real only ({baseline}), {len(reps)} replicates")
    run([task("real", r) for r in reps])

    # ---- selection per replicate, then every other arm ------------------------------------------------------
    tasks, kept_counts, quality = [], {}, {}
    for rep in reps:
        if "cmo" in arms:
            tasks.append(task("cmo", rep, cmo={"enabled": True, **(cmo or {})}))
        if not needs_synthetic and "harmonized" not in arms:
            continue
        scorer = Path(classifier) if classifier else out / "runs" / "real" / rep.tag
        if not (scorer / "model.pt").is_file():
            log(f"  {rep.tag}: no scorer at {scorer} yet (collect-only), skipping its synthetic arms")
            continue
        sel = out / "selection" / rep.tag
        sel.mkdir(parents=True, exist_ok=True)
        folders = {"ood": candidates} if candidates else {}
        if "harmonized" in arms:
            folders["harmonized"] = harmonized_candidates
        for kind, folder in folders.items():
            # Scoring is deterministic and takes seconds, so a resumed experiment simply scores again.
            log(f"  {rep.tag}: scoring {kind} candidates with {scorer}")
            sc = score_candidates(folder, data, scorer, splits=rep.manifest)
            leak = touches_reported_images(folder, sc.ids, rep.manifest, data)
            kept_counts.setdefault(rep.tag, {})[f"{kind} excluded (background or source reported)"] = int(leak.sum())
            copies = copies_reported_images(sc, data, rep.manifest) & ~leak
            kept_counts[rep.tag][f"{kind} excluded (near-copy of a reported image)"] = int(copies.sum())
            leak |= copies
            for g in [gamma, *(gammas if kind == "ood" else [])]:
                kept = _clean_kept(sc, clean) if clean is not None else choose(sc, gamma=g, score=score)[0]
                kept &= ~leak
                write_manifest(sc.paths, sc.classes, kept, sel / f"{kind}_{_gtag(g)}.csv")
                counts = {c: int(((np.array(sc.classes) == c) & kept).sum()) for c in sorted(set(sc.classes))}
                kept_counts.setdefault(rep.tag, {})[f"{kind}@{g:g}"] = counts
                if g == gamma:
                    quality.setdefault(rep.tag, {})[kind] = quality_summary(sc, kept)
                    if kind == "ood":
                        write_manifest(sc.paths, sc.classes, random_matched(sc, counts, seed=rep.seed, allowed=~leak),
                                       sel / f"random_{_gtag(g)}.csv")
        if "ood" in arms:
            tasks.append(task("ood", rep, synthetic_manifest=str(sel / f"ood_{_gtag(gamma)}.csv"), **syn))
        if "random" in arms:
            tasks.append(task("random", rep, synthetic_manifest=str(sel / f"random_{_gtag(gamma)}.csv"), **syn))
        if "prior-shift" in arms:
            # (e)'s synthetic set fixes the class draws; every one of them is filled with a real image.
            control = ({"synthetic_dose": "replay", "synthetic_ratio": synthetic_ratio} if synthetic_dose == "add"
                       else {"synthetic_ratio": 0.0})
            tasks.append(task("prior-shift", rep, synthetic_manifest=str(sel / f"ood_{_gtag(gamma)}.csv"), **control))
        if "harmonized" in arms:
            tasks.append(task("harmonized", rep, synthetic_manifest=str(sel / f"harmonized_{_gtag(gamma)}.csv"),
                              **syn))
        for g in gammas:
            tasks.append(task(f"ood_{_gtag(g)}", rep, synthetic_manifest=str(sel / f"ood_{_gtag(g)}.csv"), **syn))
    run(tasks)
    if kept_counts:
        (out / "selection" / "kept_counts.json").write_text(json.dumps(kept_counts, indent=1))
        (out / "selection" / "quality.json").write_text(json.dumps(_jsonable(quality), indent=1))

    keys = [*arms, *[f"ood_{_gtag(g)}" for g in gammas]]
    results = collect(out, keys, reps, tail=list(tail), n_boot=n_boot, eval_data=eval_data is not None)
    results["config"] = config
    results["kept_counts"] = kept_counts
    (out / "results.json").write_text(json.dumps(_jsonable(results), indent=1))
    md = render_markdown(results)
    (out / "table.md").write_text(md)
    return {"results": results, "table_path": str(out / "table.md"), "markdown": md}


def run_method_comparison(data, out, methods, *, folds: int | None = 5, seeds=(0,), backbone: str = "resnet18",
                          epochs: int | None = None, resolution: int | None = None, splits=None,
                          inner_val: float = 0.15, split_seed: int = 0, eval_data=None, eval_split: str = "test",
                          eval_splits=None, tail=TAIL_CLASSES, n_boot: int = 1000, train_kw: dict | None = None,
                          quiet: bool = False, jobs: int = 1, collect_only: bool = False,
                          only_folds=None) -> dict:
    """Real-only long-tail methods on the experiment's protocol (epoch and post-hoc τ chosen on the inner split,
    reported on held-out folds); paired Δ vs the first method. The winner by mean balanced accuracy is arm (a).
    `only_folds` (fold numbers): train and tabulate only those folds (a staged protocol's first stage)."""
    from .select import _jsonable

    methods = list(methods)
    if not methods:
        raise ConfigError("no methods to compare")
    specs = {m: baseline_spec(m) for m in methods}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    reps = make_replicates(data, out, folds=folds, seeds=[int(s) for s in seeds], splits=splits,
                           inner_val=inner_val, split_seed=split_seed)
    if only_folds is not None:
        wanted = {f"fold{int(i)}" for i in only_folds}
        unknown = wanted - {r.group for r in reps}
        if unknown:
            raise ConfigError(f"only_folds: no replicate {sorted(unknown)} (have {sorted({r.group for r in reps})})")
        reps = [r for r in reps if r.group in wanted]
    common = {"backbone": backbone, "epochs": epochs, "resolution": resolution, "split_seed": split_seed,
              "quiet": True, "write_reports": False, **(train_kw or {})}
    tasks = [{"run_dir": str(out / "runs" / m / r.tag), "rep": r, "data": data,
              "train": {**common, "loss": specs[m]["loss"], "sampler": specs[m]["sampler"], **specs[m]["train_kw"]},
              "posthoc": specs[m]["posthoc"], "eval_data": eval_data, "eval_split": eval_split,
              "eval_splits": eval_splits} for r in reps for m in methods]
    todo = [t for t in tasks if not (Path(t["run_dir"]) / PREDICTIONS.format(part="test")).is_file()
            or (eval_data and not (Path(t["run_dir"]) / PREDICTIONS.format(part="eval")).is_file())]
    if collect_only:
        for t in todo:
            log(f"  {t['run_dir']}: not finished, left out of the tables")
    else:
        log(f"{len(methods)} methods x {len(reps)} replicates: {len(todo)} runs to train")
        _run_tasks(todo, jobs, log)
    results = collect(out, methods, reps, tail=list(tail), n_boot=n_boot, eval_data=eval_data is not None,
                      ref=methods[0], contrasts=(), rule=False)
    arms = results["parts"].get("test", {}).get("arms", {})
    results["best"] = max(arms, key=lambda k: arms[k]["balanced_accuracy"]["mean"] or -1) if arms else None
    results["config"] = {"data": str(data), "methods": methods, "folds": folds, "seeds": [int(s) for s in seeds],
                         "only_folds": None if only_folds is None else [int(i) for i in only_folds],
                         "inner_val": inner_val, "tail": list(tail), "n_boot": n_boot,
                         "eval_data": str(eval_data) if eval_data else None, "eval_split": eval_split,
                         **{k: v for k, v in common.items() if k not in ("quiet", "write_reports")}}
    (out / "results.json").write_text(json.dumps(_jsonable(results), indent=1))
    md = render_markdown(results, ref_label=methods[0])
    md = f"Best by mean balanced accuracy on the held-out part: **{results['best']}**\n\n" + md
    (out / "comparison.md").write_text(md)
    return {"results": results, "table_path": str(out / "comparison.md"), "best": results["best"]}


def collect(out: Path, keys: list[str], reps: list[Replicate], *, tail: list[str], n_boot: int,
            eval_data: bool, ref: str = "real", contrasts=CONTRASTS, rule: bool = True) -> dict:
    """Per-arm tables and paired comparisons from the saved predictions, for the reported part and the eval source."""
    parts = {"test": "seed"} | ({"eval": "replicate"} if eval_data else {})
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


# ---- the decision rule (written down before any run; docs/results/augmentation_experiment.md) ----------------------
def _lower(c: dict | None, metric: str = "balanced_accuracy") -> float | None:
    if not c or not c.get("n_replicates"):
        return None
    return c["bootstrap"][metric]["ci95"][0]


def _upper(c: dict | None, metric: str = "balanced_accuracy") -> float | None:
    if not c or not c.get("n_replicates"):
        return None
    return c["bootstrap"][metric]["ci95"][1]


def decide(part: dict, alpha: float = 0.05) -> dict:
    """The pre-registered verdict for arms (e) and (f) on one evaluation part.

    helps:  Δ balanced accuracy vs (a) has a 95% bootstrap interval above 0, McNemar p < alpha in every seed,
            and Δ vs the prior-shift control (c) has an interval above 0 (the gain is not a class-prior effect).
    hurts:  Δ balanced accuracy vs (a) has a 95% interval below 0.
    no detectable effect: anything else.
    Beats CMO: Δ vs (b) interval above 0. Tail gain: pooled AK+DF+VASC recall Δ vs (a) interval above 0.
    """
    verdict = {}
    for arm in ("ood", "harmonized"):
        va = part["vs_real"].get(arm)
        if not va or not va.get("n_replicates"):
            continue
        lo, hi = _lower(va), _upper(va)
        vs_c = part["contrasts"].get(f"{arm} - prior-shift")
        vs_b = part["contrasts"].get(f"{arm} - cmo")
        helps = (lo is not None and lo > 0 and va["mcnemar_p_max"] < alpha
                 and vs_c is not None and (_lower(vs_c) or 0) > 0)
        call = "helps" if helps else "hurts" if (hi is not None and hi < 0) else "no detectable effect"
        verdict[arm] = {
            "verdict": call,
            "delta_balanced_accuracy_vs_a": va["bootstrap"]["balanced_accuracy"],
            "mcnemar_p_max_vs_a": va["mcnemar_p_max"],
            "beats_prior_shift_control": None if vs_c is None else bool((_lower(vs_c) or 0) > 0),
            "beats_cmo": None if vs_b is None else bool((_lower(vs_b) or 0) > 0),
            "tail_recall_gain": bool((_lower(va, "tail_recall") or 0) > 0),
        }
    return verdict


# ---- markdown ----------------------------------------------------------------------------------------------------
def _ms(s: dict | None, d: int = 3) -> str:
    if not s or s.get("mean") is None:
        return "–"
    if s["n"] > 1:
        return f"{s['mean']:.{d}f} ± {s['std']:.{d}f}"
    return f"{s['mean']:.{d}f}"


def _delta(c: dict | None, metric: str, d: int = 3) -> str:
    if not c or not c.get("n_replicates"):
        return "–"
    b = c["bootstrap"][metric]
    if b["delta"] is None:
        return "–"
    lo, hi = b["ci95"]
    return f"{b['delta']:+.{d}f} [{lo:+.{d}f}, {hi:+.{d}f}]" if lo is not None else f"{b['delta']:+.{d}f}"


def render_markdown(results: dict, ref_label: str = "(a)") -> str:
    cfg = results.get("config", {})
    tail = cfg.get("tail") or list(TAIL_CLASSES)
    lines = []
    for part, e in results["parts"].items():
        title = ("held-out folds" if cfg.get("folds") else "source val split") if part == "test" else \
            f"other source: {cfg.get('eval_data')} ({cfg.get('eval_split')})"
        lines += [f"## {title}", ""]
        if not e.get("arms"):
            lines += ["(no finished runs)", ""]
            continue
        if e.get("dropped_classes"):
            lines += [f"Images of classes the models lack were left out: {e['dropped_classes']}.", ""]
        lines += [("Per arm: mean ± std over replicates. Δ vs (a): paired, mean over replicates, 95% bootstrap "
                   "interval over image sets, seeds and images; McNemar p: largest over the tests (one per seed, or "
                   "per model on a shared evaluation set)."), "",
                  (f"| arm | n | balanced accuracy | Δ vs {ref_label} | tail recall ({'+'.join(tail)}) | Δ tail recall | "
                   "macro AUC | log-loss | McNemar p |"), "|---|---|---|---|---|---|---|---|---|"]
        for k, t in e["arms"].items():
            c = e["vs_real"].get(k)
            p = f"{c['mcnemar_p_max']:.3g}" if c and c.get("n_replicates") else "–"
            lines.append(f"| {ARM_LABELS.get(k, k)} | {t['balanced_accuracy']['n']} | {_ms(t['balanced_accuracy'])} | "
                         f"{_delta(c, 'balanced_accuracy')} | {_ms(t['tail_recall'])} | {_delta(c, 'tail_recall')} | "
                         f"{_ms(t['macro_auc'])} | {_ms(t['log_loss'])} | {p} |")
        classes = e["classes"]
        lines += ["", "Per-class recall (mean ± std; support per image set in brackets):", "",
                  "| arm | " + " | ".join(f"{c} ({e['support'][c]})" for c in classes) + " |",
                  "|---|" + "---|" * len(classes)]
        for k, t in e["arms"].items():
            lines.append(f"| {ARM_LABELS.get(k, k)} | " + " | ".join(_ms(t["per_class_recall"][c]) for c in classes)
                         + " |")
        if e["contrasts"]:
            lines += ["", "Contrasts named by the decision rule (Δ balanced accuracy, Δ tail recall, McNemar p):", "",
                      "| contrast | Δ balanced accuracy | Δ tail recall | McNemar p |", "|---|---|---|---|"]
            for name, c in e["contrasts"].items():
                p = f"{c['mcnemar_p_max']:.3g}" if c.get("n_replicates") else "–"
                lines.append(f"| {name} | {_delta(c, 'balanced_accuracy')} | {_delta(c, 'tail_recall')} | {p} |")
        if e.get("decision"):
            lines += ["", "Decision (rule fixed before the run): " + "; ".join(
                f"{ARM_LABELS.get(a, a)}: **{v['verdict']}** (beats (c): {v['beats_prior_shift_control']}, "
                f"beats CMO: {v['beats_cmo']}, tail gain: {v['tail_recall_gain']})" for a, v in e["decision"].items())]
        lines.append("")
    lines += ["Config: `" + json.dumps({k: cfg[k] for k in sorted(cfg)}, default=str) + "`", ""]
    return "\n".join(lines)


__all__ = ["ARMS", "HEADLINE", "baseline_spec", "collect", "decide", "random_matched", "run_augmentation_experiment",
           "run_method_comparison"]
