"""`tailsynth train classifier`, `tailsynth evaluate`, `tailsynth experiment`: thin wrappers over tailsynth.classify."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import err, fail_cleanly, print_json
from .train_app import attach, train_app


def _csv_list(s: str | None) -> list[str] | None:
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


@train_app.command("classifier")
def train_classifier_cmd(
    data: Path = typer.Option(..., "--data", help="ISIC 2019 folder or MedMNIST .npz"),
    out: Path = typer.Option(..., "--out", help="model folder to write"),
    backbone: str = typer.Option("resnet18", "--backbone", help="timm model name"),
    loss: str = typer.Option("ce", "--loss", help="ce, weighted-ce, cb-ce, focal, ldam-drw, logit-adjusted, "
                                                  "balanced-softmax"),
    sampler: str = typer.Option("none", "--sampler", help="none, class-balanced, sqrt"),
    epochs: int | None = typer.Option(None, "--epochs", help="default 10"),
    seed: int = typer.Option(0, "--seed"),
    resolution: int | None = typer.Option(None, "--resolution", help="px; default: the source's native size"),
    splits: Path | None = typer.Option(None, "--splits", help="split manifest CSV image_id,split"),
    synthetic_manifest: Path | None = typer.Option(None, "--synthetic-manifest", help="CSV path,class[,weight]"),
    synthetic_ratio: float | None = typer.Option(None, "--synthetic-ratio",
                                                    help="share of each class's draws that are synthetic, 0..1 "
                                                         "(0: the prior-shift control); default: the pooled share"),
    synthetic_weight: float | None = typer.Option(None, "--synthetic-weight",
                                                     help="loss weight of synthetic images (default 1)"),
    cmo: bool = typer.Option(False, "--cmo", help="paste real tail lesions onto head-class images (CMO)"),
    cmo_prob: float | None = typer.Option(None, "--cmo-prob", help="CMO: share of head-class images pasted on"),
    mask_dir: Path | None = typer.Option(None, "--mask-dir", help="CMO: lesion masks from `tailsynth masks`"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    lr: float | None = typer.Option(None, "--lr"),
    optimizer: str | None = typer.Option(None, "--optimizer", help="adamw or sgd"),
    no_augment: bool = typer.Option(False, "--no-augment", help="switch handcrafted augmentation off"),
    pretrained_path: Path | None = typer.Option(None, "--pretrained-path", help="local weights file"),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads"),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)"),
    resume: bool = typer.Option(False, "--resume", help="continue from OUT/checkpoint.pt"),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Train on the train split, select on val balanced accuracy; writes OUT/model.pt and OUT/metrics.json."""
    from ..classify.train import train_classifier

    kw = {k: v for k, v in dict(batch_size=batch_size, lr=lr, optimizer=optimizer, threads=threads, device=device,
                                pretrained_path=str(pretrained_path) if pretrained_path else None).items()
          if v is not None}
    if no_augment:
        kw["augment"] = {"enabled": False}
    if synthetic_weight is not None:
        kw["synthetic_weight"] = synthetic_weight
    if cmo or cmo_prob is not None or mask_dir is not None:
        kw["cmo"] = {"enabled": True, **({"prob": cmo_prob} if cmo_prob is not None else {}),
                     **({"mask_dir": str(mask_dir)} if mask_dir else {})}
    with fail_cleanly():
        m = train_classifier(data, out, backbone=backbone, loss=loss, epochs=epochs, seed=seed,
                             resolution=resolution, splits=splits, synthetic_manifest=synthetic_manifest,
                             synthetic_ratio=synthetic_ratio, sampler=sampler, resume=resume, quiet=quiet, **kw)
    print_json({k: m.get(k) for k in ("balanced_accuracy", "accuracy", "macro_auc", "ece", "selected_epoch")}
               | {"out": str(out)})


def evaluate_cmd(
    model: Path = typer.Option(..., "--model", help="model folder (or model.pt)"),
    data: Path = typer.Option(..., "--data", help="ISIC 2019 folder or MedMNIST .npz"),
    split: str = typer.Option("val", "--split"),
    out: Path = typer.Option(..., "--out", help="report folder to write"),
    splits: Path | None = typer.Option(None, "--splits", help="split manifest CSV image_id,split"),
    posthoc_tau: float | None = typer.Option(None, "--posthoc-tau", help="post-hoc logit adjustment τ"),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="bootstrap resamples for 95% intervals (0: none)"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Metrics of MODEL on SPLIT: metrics.json, per_class.csv, metrics.md, confusion and recall plots."""
    from ..classify.evaluate import evaluate_model

    with fail_cleanly():
        m = evaluate_model(model, data, split, out, splits=splits, posthoc_tau=posthoc_tau, bootstrap=bootstrap,
                           seed=seed)
    print_json({k: m.get(k) for k in ("balanced_accuracy", "accuracy", "macro_auc", "ece")} | {"out": str(out)})


def experiment_cmd(
    data: Path = typer.Option(..., "--data", help="ISIC 2019 folder or MedMNIST .npz"),
    out: Path = typer.Option(..., "--out"),
    methods: str | None = typer.Option(None, "--methods", help="comma list (default: all)"),
    seeds: str = typer.Option("0,1,2", "--seeds", help="comma list"),
    backbone: str = typer.Option("resnet18", "--backbone"),
    epochs: int | None = typer.Option(None, "--epochs"),
    splits: Path | None = typer.Option(None, "--splits"),
    folds: int | None = typer.Option(None, "--folds",
                                       help="k-fold lesion-grouped CV over train+val, epoch and post-hoc τ chosen on an "
                                            "inner split, paired Δ vs the first method (the augmentation "
                                            "experiment's protocol); without it: train -> val as before"),
    inner_val: float = typer.Option(0.15, "--inner-val", help="with --folds: inner split share"),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="with --folds: bootstrap resamples"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    device: str | None = typer.Option(None, "--device"),
    jobs: int = typer.Option(1, "--jobs", help="with --folds: training runs in parallel worker processes"),
    threads: int | None = typer.Option(None, "--threads"),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Methods x seeds -> comparison.md / comparison.csv (mean ± std, rarest class highlighted)."""
    from ..classify.experiment import METHODS, run_experiment

    kw = {k: v for k, v in (("threads", threads), ("batch_size", batch_size), ("device", device)) if v is not None}
    with fail_cleanly():
        try:
            seed_list = [int(s) for s in _csv_list(seeds) or []]
        except ValueError:
            raise ValueError(f"--seeds {seeds!r}: expected a comma list of integers") from None
        if folds:
            from ..ood.experiment import run_method_comparison

            res = run_method_comparison(data, out, _csv_list(methods) or list(METHODS), folds=folds,
                                        seeds=seed_list, backbone=backbone, epochs=epochs, splits=splits,
                                        inner_val=inner_val, n_boot=bootstrap, train_kw=kw, quiet=quiet, jobs=jobs)
            print_json({"table": res["table_path"], "best": res["best"]})
            return
        res = run_experiment(data, out, methods=_csv_list(methods), seeds=seed_list, backbone=backbone,
                             epochs=epochs, splits=splits, quiet=quiet, **kw)
    err.print(f"methods: {', '.join(_csv_list(methods) or METHODS)}; table: {res['table']}")
    print_json({"table": res["table"], "rarest_class": res["rarest_class"]})


def register(app: typer.Typer) -> None:
    attach(app)
    app.command("evaluate")(evaluate_cmd)
    app.command("experiment")(experiment_cmd)
