"""Do inpainted, OOD-selected tail lesions beat the best real-only training? (`tailsynth experiment-augment`)

Arms, all with the same backbone, epochs, augmentation, seeds and image sets (see replicates.py):
  (a) real         the best real-only long-tail method (a name from `classify.methods.METHODS`)
  (b) cmo          (a) + CMO: real tail lesions, cut out by their lesion masks, pasted onto head-class images
                   during training, labels mixed by area (Park et al., CVPR 2022)
  (c) prior-shift  (a) with real images oversampled to exactly the per-class draws of (e): the prior-shift control
  (d) random       (a) + synthetic candidates chosen at random, the same per-class counts as (e)
  (e) ood          (a) + synthetic candidates kept by OOD post-selection at gamma
  (f) harmonized   (a) + OOD-selected candidates from a second folder (`generate --mode harmonize`)
  (g) features     (a)'s backbone frozen, its head re-fitted on real + Gaussian-sampled tail features (feature_arm.py)
  (g0) features-real  the same head re-fit on real features only: (g)'s control
Optionally more gammas for (e) (`gammas`).

Per replicate, (a) trains first; its model scores the candidates (selection never sees the reported images),
then the other arms train. Every run is one `train_classifier` call in its own folder; a finished run is reused,
so an interrupted experiment resumes. The results (`results.RESULTS_FILE`) hold per-arm means, paired Δ vs (a) and
between the arms the decision rule names, with bootstrap intervals and McNemar p-values, and the verdict of the rule.
"""


from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..classify.folders import TrainedClassifier
from ..data.classes import TAIL_CLASSES
from ..errors import ConfigError
from .arms import ARMS, FEATURE_ARMS
from .replicates import Replicate, make_replicates
from .results import collect, write_results
from .runs import RunPlan, baseline_spec, train_pending
from .tables import render_markdown


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
    from ..ood.memorize import descriptor_nn, descriptors, pixel_vectors
    from ..ood.select import shrink

    ds = load_source(data, splits=manifest)
    if "test" not in ds.splits or not len(sc.ids):
        return np.zeros(len(sc.ids), bool)
    res = int(sc.info["resolution"])
    x, _ = ds.split("test").arrays(res)
    d, _ = descriptor_nn(descriptors(pixel_vectors(shrink(sc.images, pixel_size))),
                         descriptors(pixel_vectors(shrink(x, pixel_size))))
    return d <= sc.memo.copy_threshold


def _clean_kept(sc, options: dict) -> np.ndarray:
    from ..ood.clean import DEFAULT_BAND, DEFAULT_CONFIDENCE, Prototypes, clean_mask

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
    from ..ood.candidates import read_candidates

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


def _gtag(g: float) -> str:
    return f"g{g:.2f}".replace(".", "p")


def _arms_to_run(arms, gammas, candidates, harmonized_candidates, seeds) -> tuple[list[str], list]:
    """(the arms, (a) first when missing; the arms or gammas that need the candidates), checked."""
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
    return arms, needs_synthetic


def _reported_leaks(sc, folder, data, rep: Replicate, kind: str, counts: dict) -> np.ndarray:
    """Candidates that would carry a reported image into training (painted on or harmonized from a reported lesion,
    or a near-copy of a reported image), each reason counted in COUNTS."""
    leak = touches_reported_images(folder, sc.ids, rep.manifest, data)
    counts[f"{kind} excluded (background or source reported)"] = int(leak.sum())
    copies = copies_reported_images(sc, data, rep.manifest) & ~leak
    counts[f"{kind} excluded (near-copy of a reported image)"] = int(copies.sum())
    return leak | copies


def select_for_replicate(rep: Replicate, scorer: Path, folders: dict, data, sel: Path, *, gamma: float, gammas,
                         score: str, clean: dict | None, log) -> tuple[dict, dict]:
    """Score each candidate folder with the replicate's scorer and write the synthetic sets of its arms: kept by
    OOD selection (or cleaning) at each gamma, and (d)'s random draw with (e)'s counts. Returns the replicate's
    (kept counts, quality summaries at gamma)."""
    from ..classify.model import feature_model
    from ..ood.select import choose, quality_summary, score_candidates
    from ..ood.selection import write_manifest

    sel.mkdir(parents=True, exist_ok=True)
    model = feature_model(scorer)
    counts_of: dict = {}
    quality: dict = {}
    for kind, folder in folders.items():
        # Scoring is deterministic and takes seconds, so a resumed experiment simply scores again.
        log(f"  {rep.tag}: scoring {kind} candidates with {scorer}")
        sc = score_candidates(folder, data, model, splits=rep.manifest)
        leak = _reported_leaks(sc, folder, data, rep, kind, counts_of)
        for g in [gamma, *(gammas if kind == "ood" else [])]:
            kept = _clean_kept(sc, clean) if clean is not None else choose(sc, gamma=g, score=score)[0]
            kept &= ~leak
            write_manifest(sc.paths, sc.classes, kept, sel / f"{kind}_{_gtag(g)}.csv")
            counts = {c: int(((np.array(sc.classes) == c) & kept).sum()) for c in sorted(set(sc.classes))}
            counts_of[f"{kind}@{g:g}"] = counts
            if g == gamma:
                quality[kind] = quality_summary(sc, kept)
                if kind == "ood":
                    write_manifest(sc.paths, sc.classes, random_matched(sc, counts, seed=rep.seed, allowed=~leak),
                                   sel / f"random_{_gtag(g)}.csv")
    return counts_of, quality


def _synthetic_tasks(plan: RunPlan, rep: Replicate, sel: Path, arms, *, gamma: float, gammas, posthoc: bool,
                     syn: dict, control: dict) -> list[dict]:
    """The runs of REP that train on a synthetic set written by _select (or, for (c), on its class draws)."""
    def manifest(kind: str, g: float = gamma) -> str:
        return str(sel / f"{kind}_{_gtag(g)}.csv")

    tasks = []
    if "ood" in arms:
        tasks.append(plan.task("ood", rep, posthoc=posthoc, synthetic_manifest=manifest("ood"), **syn))
    if "random" in arms:
        tasks.append(plan.task("random", rep, posthoc=posthoc, synthetic_manifest=manifest("random"), **syn))
    if "prior-shift" in arms:
        # (e)'s synthetic set fixes the class draws; every one of them is filled with a real image.
        tasks.append(plan.task("prior-shift", rep, posthoc=posthoc, synthetic_manifest=manifest("ood"), **control))
    if "harmonized" in arms:
        tasks.append(plan.task("harmonized", rep, posthoc=posthoc, synthetic_manifest=manifest("harmonized"), **syn))
    for g in gammas:
        tasks.append(plan.task(f"ood_{_gtag(g)}", rep, posthoc=posthoc, synthetic_manifest=manifest("ood", g), **syn))
    return tasks


def _feature_arms(out: Path, reps, arms, data, share: float, *, tail: list[str], report: bool, eval, log) -> None:
    """Arms (g) and (g0) of every replicate whose arm-(a) model is trained: seconds each, no network training."""
    from .feature_arm import run_feature_arm

    shares = {"features": share, "features-real": 0.0}
    for rep in reps:
        scorer = out / "runs" / "real" / rep.tag
        if not TrainedClassifier(scorer).has_model():
            continue
        for arm in (a for a in FEATURE_ARMS if a in arms):
            run_feature_arm(scorer, data, rep.manifest, out / "runs" / arm / rep.tag, share=shares[arm],
                            seed=rep.seed, tail=tail, report=report, has_test=rep.reported, eval_data=eval[0],
                            eval_split=eval[1], eval_splits=eval[2], log=log)


def _config(data, candidates, harmonized_candidates, arms, common: dict, syn: dict, **settings) -> dict:
    """experiment_config.json: what the run was asked to do (the training recipe without its process flags)."""
    return {"data": str(data), "candidates": str(candidates) if candidates else None,
            "harmonized_candidates": str(harmonized_candidates) if harmonized_candidates else None,
            "baseline": settings.pop("baseline"), "arms": arms, **settings, **syn,
            **{k: v for k, v in common.items() if k not in ("quiet", "write_reports")}}


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
                                jobs: int = 1, collect_only: bool = False, feature_share: float = 0.25,
                                feature_report: bool = True, final: bool = False) -> dict:
    """Train (or, with collect_only, only gather finished) runs of every arm; write the results and table.md.

    `synthetic_dose` "add": synthetic draws come on top of (a)'s real epoch, and (c) is its replay control (the same
    extra draws, all real); "replace": they take a share of the class totals and (c) is the prior-shift control.
    `clean` (a dict of `select_candidates`' clean_* options, may be empty): arms (e)/(f) keep what the cleaning rule
    keeps instead of a gamma fraction; (d) still matches (e)'s counts. `feature_share`: r of arm (g);
    `feature_report` False (its screen): (g)/(g0) are fitted and scored on the inner split only. `final`: every arm
    trains once on all of DATA and is read on EVAL_DATA only (the final models and their external check)."""
    if final and eval_data is None:
        raise ConfigError("--final reports on another source only: give it --eval-data (a folder none of the runs saw)")
    arms, needs_synthetic = _arms_to_run(arms, gammas, candidates, harmonized_candidates, seeds)
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
    control = ({"synthetic_dose": "replay", "synthetic_ratio": synthetic_ratio} if synthetic_dose == "add"
               else {"synthetic_ratio": 0.0})
    reps = make_replicates(data, out, folds=folds, seeds=[int(s) for s in seeds], splits=splits,
                           inner_val=inner_val, split_seed=split_seed, final=final)
    config = _config(data, candidates, harmonized_candidates, arms, common, syn, baseline=baseline, folds=folds,
                     seeds=[int(s) for s in seeds], gamma=gamma, gammas=gammas, score=score, inner_val=inner_val,
                     tail=list(tail), eval_data=str(eval_data) if eval_data else None, eval_split=eval_split,
                     n_boot=n_boot, cmo=cmo or {}, feature_share=feature_share, final=final)
    (out / "experiment_config.json").write_text(json.dumps(config, indent=1, default=str))
    plan = RunPlan(out, data, common, eval_data, eval_split, eval_splits)

    def train(tasks: list[dict]) -> None:
        train_pending(plan.pending(tasks), jobs=jobs, log=log, collect_only=collect_only)

    log(f"arm (a) real only ({baseline}), {len(reps)} replicates")  # per replicate it is the candidates' scorer
    train([plan.task("real", r, posthoc=base["posthoc"]) for r in reps])
    if not collect_only:
        _feature_arms(out, reps, arms, data, feature_share, tail=list(tail), report=feature_report,
                      eval=(eval_data, eval_split, eval_splits), log=log)
    folders = ({"ood": candidates} if candidates else {}) | (
        {"harmonized": harmonized_candidates} if "harmonized" in arms else {})
    tasks, kept_counts, quality = [], {}, {}
    for rep in reps:
        if "cmo" in arms:
            tasks.append(plan.task("cmo", rep, posthoc=base["posthoc"], cmo={"enabled": True, **(cmo or {})}))
        if not needs_synthetic and "harmonized" not in arms:
            continue
        scorer = Path(classifier) if classifier else out / "runs" / "real" / rep.tag
        if not TrainedClassifier(scorer).has_model():
            log(f"  {rep.tag}: no scorer at {scorer} yet (collect-only), skipping its synthetic arms")
            continue
        sel = out / "selection" / rep.tag
        kept_counts[rep.tag], quality[rep.tag] = select_for_replicate(
            rep, scorer, folders, data, sel, gamma=gamma, gammas=gammas, score=score, clean=clean, log=log)
        tasks += _synthetic_tasks(plan, rep, sel, arms, gamma=gamma, gammas=gammas, posthoc=base["posthoc"],
                                  syn=syn, control=control)
    train(tasks)
    return _write(out, arms, gammas, reps, config, kept_counts, quality, tail=tail, n_boot=n_boot,
                  eval_data=eval_data)


REPLICATE_QUALITY_FILE = "replicate_quality.json"


def _write(out: Path, arms, gammas, reps, config: dict, kept_counts: dict, quality: dict, *, tail, n_boot: int,
           eval_data) -> dict:
    """The selection's counts and quality, then the results and table.md from every finished run."""
    from ..ood.select import jsonable

    if kept_counts:
        (out / "selection" / "kept_counts.json").write_text(json.dumps(kept_counts, indent=1))
        # Not a selection record (`ood.selection`): {replicate: {candidate kind: per-class quality}}.
        (out / "selection" / REPLICATE_QUALITY_FILE).write_text(json.dumps(jsonable(quality), indent=1))
    keys = [*arms, *[f"ood_{_gtag(g)}" for g in gammas]]
    results = collect(out, keys, reps, tail=list(tail), n_boot=n_boot, eval_data=eval_data is not None)
    results["config"] = config
    results["kept_counts"] = kept_counts
    md = render_markdown(results)
    table = write_results(out, results, "table.md", md)
    return {"results": results, "table_path": str(table), "markdown": md}
