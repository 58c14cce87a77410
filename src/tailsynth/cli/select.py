"""`tailsynth select` (OOD post-selection) and `tailsynth experiment-augment` (real vs real + synthetic)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import ConfigError
from ..ood.floor import DEFAULT_FLOOR_QUANTILE
from ..outdir import claim
from .common import (
    CONFIG_HELP,
    FRACTION,
    NON_NEGATIVE,
    PRECISION_HELP,
    PRETRAINED_HELP,
    between,
    fail_cleanly,
    overwrite_option,
    print_json,
    record_run,
    resolve_options,
    seed_list,
    set_options,
)


FLOOR_HELP = ("the floor under every rule: keep only candidates whose OOD score is within this quantile of "
              "their class's real held-out images, not confidently another class, inside the prototype band and not "
              "memorized (ood.floor)")


def select(
    ctx: typer.Context,
    candidates: Path = typer.Option(..., "--candidates", help="GEN_DIR written by `tailsynth generate`"),
    real: Path = typer.Option(..., "--real", help="real data SOURCE (ISIC folder or .npz) the classifier was trained on"),
    classifier: Path = typer.Option(..., "--classifier", help="MODEL_DIR of a classifier trained on real data only"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    gamma: float | None = typer.Option(None, "--gamma", callback=FRACTION, help="keep this fraction of candidates per class (0..1]"),
    calibrate: float | None = typer.Option(None, "--calibrate", callback=FRACTION,
                                              help="keep candidates inside this quantile of real val scores of their class"),
    score: str = typer.Option("mahalanobis", "--score", help="mahalanobis | energy | knn | p_intended | "
                                                               "rel_mahalanobis"),
    clean: bool = typer.Option(False, "--clean", help="keep what the cleaning rule keeps (not confidently another "
                                                       "class, inside the prototype band [lo, hi] x d_c, not "
                                                       "memorized) instead of a --gamma fraction"),
    clean_confidence: float | None = typer.Option(None, "--clean-confidence", callback=FRACTION,
                                                  help="delete when another class has p >= this (default 0.8)"),
    clean_band: str | None = typer.Option(None, "--clean-band", help="lo,hi multiples of d_c (default 1,2)"),
    floor_quantile: float = typer.Option(DEFAULT_FLOOR_QUANTILE, "--floor-quantile", callback=FRACTION,
                                         help=FLOOR_HELP),
    no_floor: bool = typer.Option(False, "--no-floor", help="no floor: the rule ranks every candidate (the record "
                                                             "says the floor was off)"),
    weights: str | None = typer.Option(None, "--weights", help="add per-sample weights: p_intended | typicality"),
    knn_k: int = typer.Option(5, "--knn-k", min=1),
    memorization_quantile: float = typer.Option(0.01, "--memorization-quantile", callback=between(0, 1),
                                                help="near-copy threshold: this quantile of real val-to-train NN distances"),
    splits: Path | None = typer.Option(None, "--splits", help="split manifest CSV image_id,split for --real"),
    inception: Path | None = typer.Option(None, "--inception", help="local Inception checkpoint for torchmetrics FID"),
    no_report: bool = typer.Option(False, "--no-report", help="skip report.html"),
    overwrite: bool = overwrite_option(),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
) -> None:
    """Score synthetic candidates with a real-data classifier and keep the in-distribution ones."""
    from ..classify.model import feature_model
    from ..ood.floor import Floor, shortfall_lines
    from ..ood.select import select_candidates

    with fail_cleanly():
        o = resolve_options(ctx, config)
        overwrite = o.pop("overwrite")
        clean_band = _band(o["clean_band"]) if o["clean_band"] else None
    with fail_cleanly(), claim(o["out"], "select", overwrite=overwrite):
        q = select_candidates(o["candidates"], o["real"], feature_model(o["classifier"]), o["out"], gamma=o["gamma"],
                              calibrate=o["calibrate"], score=o["score"], weights=o["weights"], knn_k=o["knn_k"],
                              memorization_quantile=o["memorization_quantile"], splits=o["splits"],
                              inception=str(o["inception"]) if o["inception"] else None, report=not o["no_report"],
                              clean=o["clean"], clean_confidence=o["clean_confidence"],
                              clean_band=clean_band,
                              floor=None if o["no_floor"] else Floor(quantile=o["floor_quantile"]))
        record_run(o["out"], "select", o, kept=q["overall"].get("n_kept"))
    for line in shortfall_lines(q["floor"]["per_class"]):
        typer.echo(line, err=True)
    print_json({"out": str(o["out"]), **q["overall"],
                "per_class_kept": {c: e["n_kept"] for c, e in q["per_class"].items()}})


def _floats(s: str | None, option: str = "") -> list[float]:
    try:
        return [float(x) for x in (s or "").split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{option or 'value'} {s!r}: expected a comma list of numbers") from None


def _band(s: str, option: str = "--clean-band") -> tuple[float, float]:
    """LO,HI multiples of d_c with 0 <= LO <= HI."""
    band = _floats(s, option)
    if len(band) != 2 or not 0 <= band[0] <= band[1]:
        raise ConfigError(f"{option} {s!r}: expected LO,HI with 0 <= LO <= HI, e.g. 1,2")
    return band[0], band[1]


def _extra_gammas(text: str) -> list[float]:
    """--gammas: more keep fractions for arm (e), each in (0, 1]."""
    values = _floats(text, "--gammas")
    if any(not 0 < g <= 1 for g in values):
        raise ConfigError(f"--gammas {text!r}: every gamma must be in (0, 1]")
    return values


SHARE = between(0, 1, hi_open=True)
FEATURE_SHARE_HELP = "arm (g): share r of a tail class's weight carried by synthetic features"
CANDIDATES_HELP = "GEN_DIR of synthetic candidates (arms prior-shift, random, ood)"
FINAL_HELP = ("train every arm once on all of --data (an inner split picks the epoch) and report only on --eval-data "
              "(HAM10000 folder: --eval-split all): the final models and their external check")


def experiment_augment(
    data: Path = typer.Option(..., "--data", help="real data SOURCE (DermaMNIST .npz, ISIC or HAM10000 folder)"),
    out: Path = typer.Option(..., "--out"),
    candidates: Path | None = typer.Option(None, "--candidates", help=CANDIDATES_HELP),
    harmonized_candidates: Path | None = typer.Option(None, "--harmonized-candidates",
                                                        help="GEN_DIR from `generate --mode harmonize` (arm harmonized)"),
    baseline: str = typer.Option("class-balanced-sampler", "--baseline",
                                 help="arm (a): a method of `tailsynth experiment` (the comparison's winner)"),
    arms: str = typer.Option("real,cmo,prior-shift,random,ood,harmonized", "--arms",
                             help="subset of real,cmo,prior-shift,random,ood,harmonized,features (g: feature-space "
                                  "tail samples, head re-fit),features-real (g0: its control)"),
    folds: int | None = typer.Option(None, "--folds", min=2, help="k-fold lesion-grouped stratified CV over train+val; "
                                                             "without it, report on the source's val split"),
    seeds: str = typer.Option("0", "--seeds", help="comma-separated training seeds (per fold)"),
    gamma: float = typer.Option(0.4, "--gamma", "--main-gamma", callback=FRACTION, help="keep fraction of arms (e)/(f); (d) matches (e)"),
    gammas: str | None = typer.Option(None, "--gammas", help="extra gammas for arm (e) (a sweep)"),
    synthetic_ratio: float | None = typer.Option(None, "--synthetic-ratio", callback=between(0, 1),
                                                    help="share of each class's draws that are synthetic "
                                                         "(default: the pooled share)"),
    synthetic_weight: float = typer.Option(1.0, "--synthetic-weight", callback=NON_NEGATIVE,
                                           help="loss weight of synthetic images"),
    synthetic_dose: str = typer.Option("replace", "--synthetic-dose",
                                       help="replace: synthetic draws take a share of the class totals; add: on top "
                                            "of (a)'s real epoch, (c) then replays the same extra draws as real"),
    clean: bool = typer.Option(False, "--clean", help="arms (e)/(f) keep what the cleaning rule keeps (ood.clean) "
                                                      "instead of a --gamma fraction"),
    clean_confidence: float = typer.Option(0.8, "--clean-confidence", callback=FRACTION),
    clean_band: str = typer.Option("1,2", "--clean-band"),
    feature_share: float = typer.Option(0.25, "--feature-share", callback=SHARE, help=FEATURE_SHARE_HELP),
    cmo_prob: float = typer.Option(0.5, "--cmo-prob", callback=between(0, 1), help="share of head-class images that get a pasted lesion"),
    mask_dir: Path | None = typer.Option(None, "--mask-dir", help="lesion masks from `tailsynth masks` for CMO "
                                                                    "(default: segmented on the fly)"),
    backbone: str = typer.Option("resnet18", "--backbone"),
    pretrained: str | None = typer.Option(None, "--pretrained", help=PRETRAINED_HELP),
    precision: str | None = typer.Option(None, "--precision", help=PRECISION_HELP),
    epochs: int | None = typer.Option(None, "--epochs", min=1),
    resolution: int | None = typer.Option(None, "--resolution", min=8),
    score: str = typer.Option("mahalanobis", "--score"),
    classifier: Path | None = typer.Option(None, "--classifier",
                                              help="one scorer for every replicate (default: each replicate's arm (a))"),
    splits: Path | None = typer.Option(None, "--splits"),
    inner_val: float = typer.Option(0.15, "--inner-val", callback=between(0, 1, lo_open=True, hi_open=True), help="share of the training part held out to pick the epoch"),
    split_seed: int = typer.Option(0, "--split-seed", min=0, help="seed of the folds and inner splits"),
    eval_data: Path | None = typer.Option(None, "--eval-data", help="another SOURCE the runs never saw"),
    final: bool = typer.Option(False, "--final", help=FINAL_HELP),
    eval_split: str = typer.Option("test", "--eval-split", help="split of --eval-data to evaluate on"),
    eval_splits: Path | None = typer.Option(None, "--eval-splits", help="split manifest for --eval-data"),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="bootstrap resamples for the paired intervals"),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch threads per training run"),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="training runs in parallel worker processes"),
    collect_only: bool = typer.Option(False, "--collect-only", help="train nothing; tabulate the finished runs"),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Best real-only vs CMO vs prior-shift control vs random / OOD-selected / harmonized synthetic, paired."""
    params = dict(locals())  # the options, before any other local exists
    from ..evaluation.augment import run_augmentation_experiment

    with fail_cleanly():
        seeds_ = seed_list("--seeds", seeds)
        extra_gammas = _extra_gammas(gammas)
        band = list(_band(clean_band)) if clean else None
    # The experiment reuses the finished runs in OUT by design (an interrupted one resumes), so OUT is only locked.
    with fail_cleanly(), claim(out, "experiment-augment", resume=True):
        record_run(out, "experiment-augment", params)
        cmo = {"prob": cmo_prob, **({"mask_dir": str(mask_dir)} if mask_dir else {})}
        res = run_augmentation_experiment(
            data, candidates, out, baseline=baseline, arms=[a.strip() for a in arms.split(",") if a.strip()],
            folds=folds, seeds=seeds_, gamma=gamma, gammas=extra_gammas,
            harmonized_candidates=harmonized_candidates, synthetic_ratio=synthetic_ratio,
            synthetic_weight=synthetic_weight, synthetic_dose=synthetic_dose,
            clean={"confidence": clean_confidence, "band": band} if clean else None, cmo=cmo,
            backbone=backbone, epochs=epochs, resolution=resolution,
            score=score, classifier=classifier, splits=splits, inner_val=inner_val, split_seed=split_seed,
            eval_data=eval_data, eval_split=eval_split, eval_splits=eval_splits, n_boot=bootstrap, jobs=jobs,
            collect_only=collect_only, quiet=quiet, feature_share=feature_share, final=final, train_kw=set_options(
                threads=threads, batch_size=batch_size, device=device, pretrained=pretrained, precision=precision))
    _print_result(out, res, table=final)


def _print_result(out: Path, res: dict, table: bool) -> None:
    """The verdicts as one JSON line; with TABLE (the external check, read by people) the markdown table first."""
    if table:
        typer.echo(res["markdown"])
    decision = {part: e.get("decision") for part, e in res["results"]["parts"].items()}
    print_json({"out": str(out), "table": res["table_path"], "decision": decision})


def register(app: typer.Typer) -> None:
    app.command("select")(select)
    app.command("experiment-augment")(experiment_augment)
