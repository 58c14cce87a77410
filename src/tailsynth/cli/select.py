"""`tailsynth select` (OOD post-selection) and `tailsynth experiment-augment` (real vs real + synthetic)."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import CONFIG_HELP, fail_cleanly, print_json, record_run, resolve_options


def select(
    ctx: typer.Context,
    candidates: Path = typer.Option(..., "--candidates", help="GEN_DIR written by `tailsynth generate`"),
    real: Path = typer.Option(..., "--real", help="real data SOURCE (ISIC folder or .npz) the classifier was trained on"),
    classifier: Path = typer.Option(..., "--classifier", help="MODEL_DIR of a classifier trained on real data only"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    gamma: float | None = typer.Option(None, "--gamma", help="keep this fraction of candidates per class (0..1]"),
    calibrate: float | None = typer.Option(None, "--calibrate",
                                              help="keep candidates inside this quantile of real val scores of their class"),
    score: str = typer.Option("mahalanobis", "--score", help="mahalanobis | energy | knn | p_intended"),
    weights: str | None = typer.Option(None, "--weights", help="add per-sample weights: p_intended | typicality"),
    knn_k: int = typer.Option(5, "--knn-k"),
    memorization_quantile: float = typer.Option(0.01, "--memorization-quantile",
                                                help="near-copy threshold: this quantile of real val-to-train NN distances"),
    splits: Path | None = typer.Option(None, "--splits", help="split manifest CSV image_id,split for --real"),
    inception: Path | None = typer.Option(None, "--inception", help="local Inception checkpoint for torchmetrics FID"),
    no_report: bool = typer.Option(False, "--no-report", help="skip report.html"),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
) -> None:
    """Score synthetic candidates with a real-data classifier and keep the in-distribution ones."""
    from ..ood.select import select_candidates

    with fail_cleanly():
        o = resolve_options(ctx, config)
        q = select_candidates(o["candidates"], o["real"], o["classifier"], o["out"], gamma=o["gamma"],
                              calibrate=o["calibrate"], score=o["score"], weights=o["weights"], knn_k=o["knn_k"],
                              memorization_quantile=o["memorization_quantile"], splits=o["splits"],
                              inception=str(o["inception"]) if o["inception"] else None, report=not o["no_report"])
        record_run(o["out"], "select", o, kept=q["overall"].get("n_kept"))
    print_json({"out": str(o["out"]), **q["overall"],
                "per_class_kept": {c: e["n_kept"] for c, e in q["per_class"].items()}})


def experiment_augment(
    data: Path = typer.Option(..., "--data", help="real data SOURCE (DermaMNIST .npz or ISIC folder)"),
    candidates: Path = typer.Option(..., "--candidates", help="GEN_DIR of synthetic candidates"),
    out: Path = typer.Option(..., "--out"),
    seeds: str = typer.Option("0,1,2", "--seeds", help="comma-separated seeds (>= 3 for intervals)"),
    gammas: str = typer.Option("0.2,0.4,0.6,1.0", "--gammas", help="gamma sweep for the OOD-selected arm"),
    main_gamma: float = typer.Option(0.4, "--main-gamma", help="gamma of arms (b), (c) and (d) in the main table"),
    backbone: str = typer.Option("resnet18", "--backbone"),
    loss: str = typer.Option("ce", "--loss", help="the best real-only method's loss"),
    sampler: str | None = typer.Option(None, "--sampler", help="the best real-only method's sampler"),
    epochs: int | None = typer.Option(None, "--epochs"),
    resolution: int | None = typer.Option(None, "--resolution"),
    score: str = typer.Option("mahalanobis", "--score"),
    classifier: Path | None = typer.Option(None, "--classifier",
                                              help="real-data classifier for scoring (default: arm (a), first seed)"),
    splits: Path | None = typer.Option(None, "--splits"),
    arms: str = typer.Option("real,random,ood,oversample", "--arms", help="subset of real,random,ood,oversample"),
    no_sweep: bool = typer.Option(False, "--no-sweep", help="only the main gamma"),
    threads: int | None = typer.Option(None, "--threads", help="torch threads per training run"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    jobs: int = typer.Option(1, "--jobs", help="training runs in parallel worker processes"),
    sweep_seeds: str | None = typer.Option(None, "--sweep-seeds", help="seeds for the gamma sweep (default: --seeds)"),
    collect_only: bool = typer.Option(False, "--collect-only", help="train nothing; tabulate the finished runs"),
) -> None:
    """Real-only vs + synthetic (unselected, OOD-selected) vs real oversampling, over seeds and a gamma sweep."""
    from ..ood.experiment import run_augmentation_experiment

    with fail_cleanly():
        res = run_augmentation_experiment(
            data, candidates, out, seeds=[int(s) for s in seeds.split(",") if s.strip()],
            gammas=[float(g) for g in gammas.split(",") if g.strip()], main_gamma=main_gamma, backbone=backbone,
            loss=loss, sampler=sampler, epochs=epochs, resolution=resolution, score=score,
            classifier=classifier, splits=splits, arms=[a.strip() for a in arms.split(",") if a.strip()],
            sweep=not no_sweep, jobs=jobs, collect_only=collect_only,
            sweep_seeds=[int(x) for x in sweep_seeds.split(",") if x.strip()] if sweep_seeds else None,
            train_kw={k: v for k, v in (("threads", threads), ("batch_size", batch_size)) if v is not None})
    print_json({"out": str(out), "table": res["table_path"]})


def register(app: typer.Typer) -> None:
    app.command("select")(select)
    app.command("experiment-augment")(experiment_augment)
