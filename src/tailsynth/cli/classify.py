"""`tailsynth train classifier`, `tailsynth evaluate`, `tailsynth experiment`: thin wrappers over tailsynth.classify."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import ConfigError
from .common import CONFIG_HELP, err, fail_cleanly, print_json, record_run, resolve_options
from .train_app import attach, train_app


def _csv_list(s: str | None) -> list[str] | None:
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


@train_app.command("classifier")
def train_classifier_cmd(
    ctx: typer.Context,
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
                                                    help="synthetic draws per real image per epoch; "
                                                         "default: all synthetic images once"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    lr: float | None = typer.Option(None, "--lr"),
    optimizer: str | None = typer.Option(None, "--optimizer", help="adamw or sgd"),
    no_augment: bool = typer.Option(False, "--no-augment", help="switch handcrafted augmentation off"),
    pretrained_path: Path | None = typer.Option(None, "--pretrained-path", help="local weights file"),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads"),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)"),
    resume: bool = typer.Option(False, "--resume", help="continue from OUT/checkpoint.pt"),
    quiet: bool = typer.Option(False, "--quiet"),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP + "; any TrainConfig field may be set"),
) -> None:
    """Train on the train split, select on val balanced accuracy; writes OUT/model.pt and OUT/metrics.json."""
    from ..classify.metadata import read_meta
    from ..classify.train import TrainConfig, train_classifier

    with fail_cleanly():
        o = resolve_options(ctx, config, extra=TrainConfig.__dataclass_fields__)
        if o.pop("no_augment"):
            o["augment"] = {**(o.get("augment") or {}), "enabled": False}
        if o.get("pretrained_path") is not None:
            o["pretrained_path"] = str(o["pretrained_path"])
        kw = {k: v for k, v in o.items() if v is not None}
        m = train_classifier(kw.pop("data"), kw.pop("out"), **kw)
        record_run(o["out"], "train classifier", o, data_revision=read_meta(o["out"]).data_revision,
                   metrics={k: m.get(k) for k in ("balanced_accuracy", "accuracy", "macro_auc")})
    print_json({k: m.get(k) for k in ("balanced_accuracy", "accuracy", "macro_auc", "ece", "selected_epoch")}
               | {"out": str(out)})


def evaluate_cmd(
    ctx: typer.Context,
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
        record_run(out, "evaluate", ctx.params, balanced_accuracy=m.get("balanced_accuracy"))
    print_json({k: m.get(k) for k in ("balanced_accuracy", "accuracy", "macro_auc", "ece")} | {"out": str(out)})


def experiment_cmd(
    data: Path = typer.Option(..., "--data", help="ISIC 2019 folder or MedMNIST .npz"),
    out: Path = typer.Option(..., "--out"),
    methods: str | None = typer.Option(None, "--methods", help="comma list (default: all)"),
    seeds: str = typer.Option("0,1,2", "--seeds", help="comma list"),
    backbone: str = typer.Option("resnet18", "--backbone"),
    epochs: int | None = typer.Option(None, "--epochs"),
    splits: Path | None = typer.Option(None, "--splits"),
    threads: int | None = typer.Option(None, "--threads"),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Methods x seeds -> comparison.md / comparison.csv (mean ± std, rarest class highlighted)."""
    from ..classify.experiment import METHODS, run_experiment

    kw = {"threads": threads} if threads else {}
    with fail_cleanly():
        try:
            seed_list = [int(s) for s in _csv_list(seeds) or []]
        except ValueError:
            raise ConfigError(f"--seeds {seeds!r}: expected a comma list of integers") from None
        res = run_experiment(data, out, methods=_csv_list(methods), seeds=seed_list, backbone=backbone,
                             epochs=epochs, splits=splits, quiet=quiet, **kw)
    err.print(f"methods: {', '.join(_csv_list(methods) or METHODS)}; table: {res['table']}")
    print_json({"table": res["table"], "rarest_class": res["rarest_class"]})


def register(app: typer.Typer) -> None:
    attach(app)
    app.command("evaluate")(evaluate_cmd)
    app.command("experiment")(experiment_cmd)
