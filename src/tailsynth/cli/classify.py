"""`tailsynth train classifier`, `tailsynth evaluate`, `tailsynth experiment`: thin wrappers over tailsynth.classify."""

from __future__ import annotations

from pathlib import Path

import typer

from ..classify.folders import METRICS_FILE
from ..evaluation.quick import COMPARISON_SUMMARY
from ..evaluation.results import COMPARISON_TABLE
from ..hashing import MODEL_FILE
from ..outdir import claim
from .common import (
    CONFIG_HELP,
    NON_NEGATIVE,
    POSITIVE,
    PRECISION_HELP,
    PRETRAINED_HELP,
    between,
    err,
    fail_cleanly,
    overwrite_option,
    print_json,
    record_run,
    resolve_options,
    set_options,
)
from .common import seed_list as seeds_from
from .train_app import attach, train_app


def _csv_list(s: str | None) -> list[str] | None:
    return [x.strip() for x in s.split(",") if x.strip()] if s else None



# Command help texts that name stage files are built from the owners' constants (a docstring cannot be).
TRAIN_CLASSIFIER_HELP = (f"Train on the train split, select on val balanced accuracy; writes OUT/{MODEL_FILE} and "
                         f"OUT/{METRICS_FILE}.")


@train_app.command("classifier", help=TRAIN_CLASSIFIER_HELP)
def train_classifier_cmd(
    ctx: typer.Context,
    data: Path = typer.Option(..., "--data", help="ISIC 2019 folder or MedMNIST .npz"),
    out: Path = typer.Option(..., "--out", help="model folder to write"),
    backbone: str = typer.Option("resnet18", "--backbone", help="timm model name"),
    loss: str = typer.Option("ce", "--loss", help="ce, weighted-ce, cb-ce, focal, ldam-drw, logit-adjusted, "
                                                  "balanced-softmax"),
    sampler: str = typer.Option("none", "--sampler", help="none, class-balanced, sqrt"),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="default 10"),
    seed: int = typer.Option(0, "--seed", min=0),
    resolution: int | None = typer.Option(None, "--resolution", min=8, help="px; default: the source's native size"),
    splits: Path | None = typer.Option(None, "--splits", help="split manifest CSV image_id,split"),
    synthetic_manifest: Path | None = typer.Option(None, "--synthetic-manifest", help="CSV path,class[,weight]"),
    synthetic_ratio: float | None = typer.Option(None, "--synthetic-ratio", callback=between(0, 1),
                                                    help="share of each class's draws that are synthetic, 0..1 "
                                                         "(0: the prior-shift control); default: the pooled share"),
    synthetic_weight: float | None = typer.Option(None, "--synthetic-weight", callback=NON_NEGATIVE,
                                                     help="loss weight of synthetic images (default 1)"),
    cmo: bool = typer.Option(False, "--cmo", help="paste real tail lesions onto head-class images (CMO)"),
    cmo_prob: float | None = typer.Option(None, "--cmo-prob", callback=between(0, 1), help="CMO: share of head-class images pasted on"),
    mask_dir: Path | None = typer.Option(None, "--mask-dir", help="CMO: lesion masks from `tailsynth masks`"),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1),
    lr: float | None = typer.Option(None, "--lr", callback=POSITIVE),
    optimizer: str | None = typer.Option(None, "--optimizer", help="adamw or sgd"),
    no_augment: bool = typer.Option(False, "--no-augment", help="switch handcrafted augmentation off"),
    pretrained_path: Path | None = typer.Option(None, "--pretrained-path", help="local weights file"),
    pretrained: str | None = typer.Option(None, "--pretrained", help=PRETRAINED_HELP),
    precision: str | None = typer.Option(None, "--precision", help=PRECISION_HELP),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch CPU threads"),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the last epoch's checkpoint in OUT"),
    overwrite: bool = overwrite_option(),
    quiet: bool = typer.Option(False, "--quiet"),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP + "; any ClassifierTrainConfig field may be set"),
) -> None:
    from ..classify.metadata import read_meta
    from ..classify.train import ClassifierTrainConfig, train_classifier

    with fail_cleanly():
        o = resolve_options(ctx, config, extra=ClassifierTrainConfig.__dataclass_fields__)
        overwrite = o.pop("overwrite")
        if o.pop("no_augment"):
            o["augment"] = {**(o.get("augment") or {}), "enabled": False}
        # --cmo/--cmo-prob/--mask-dir, or a `cmo:` mapping (augment.CMOConfig) in the config file.
        cmo_on, cmo_prob, mask_dir = o.pop("cmo"), o.pop("cmo_prob"), o.pop("mask_dir")
        if isinstance(cmo_on, dict):
            o["cmo"] = cmo_on
        elif cmo_on or cmo_prob is not None or mask_dir is not None:
            o["cmo"] = {"enabled": True, **({"prob": cmo_prob} if cmo_prob is not None else {}),
                        **({"mask_dir": str(mask_dir)} if mask_dir else {})}
        if o.get("pretrained_path") is not None:
            o["pretrained_path"] = str(o["pretrained_path"])
        kw = {k: v for k, v in o.items() if v is not None}
        with claim(o["out"], "train classifier", overwrite=overwrite, resume=bool(o.get("resume")),
                   resume_hint="pass --resume to continue it"):
            m = train_classifier(kw.pop("data"), kw.pop("out"), **kw)
            record_run(o["out"], "train classifier", o, data_revision=read_meta(o["out"]).data_revision,
                       metrics={k: m.get(k) for k in ("balanced_accuracy", "accuracy", "macro_auc")})
    print_json({k: m.get(k) for k in ("balanced_accuracy", "accuracy", "macro_auc", "ece", "selected_epoch")}
               | {"out": str(out)})


EVALUATE_HELP = f"Metrics of MODEL on SPLIT: {METRICS_FILE}, per_class.csv, metrics.md, confusion and recall plots."


def evaluate_cmd(
    ctx: typer.Context,
    model: Path = typer.Option(..., "--model", help=f"model folder (or its {MODEL_FILE})"),
    data: Path = typer.Option(..., "--data", help="ISIC 2019 folder or MedMNIST .npz"),
    split: str = typer.Option("val", "--split"),
    out: Path = typer.Option(..., "--out", help="report folder to write"),
    splits: Path | None = typer.Option(None, "--splits", help="split manifest CSV image_id,split"),
    posthoc_tau: float | None = typer.Option(None, "--posthoc-tau", callback=NON_NEGATIVE,
                                             help="post-hoc logit adjustment τ"),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="bootstrap resamples for 95% intervals (0: none)"),
    seed: int = typer.Option(0, "--seed", min=0),
    overwrite: bool = overwrite_option(),
) -> None:
    from ..classify.evaluate import evaluate_model

    params = {k: v for k, v in ctx.params.items() if k != "overwrite"}
    with fail_cleanly(), claim(out, "evaluate", overwrite=overwrite):
        m = evaluate_model(model, data, split, out, splits=splits, posthoc_tau=posthoc_tau, bootstrap=bootstrap,
                           seed=seed)
        record_run(out, "evaluate", params, balanced_accuracy=m.get("balanced_accuracy"))
    print_json({k: m.get(k) for k in ("balanced_accuracy", "accuracy", "macro_auc", "ece")} | {"out": str(out)})


EXPERIMENT_HELP = (
    "Compare long-tail methods. With --folds: the replicate protocol (lesion-grouped folds, epoch and tau chosen on an "
    "inner split, paired intervals vs the first method): what a result is claimed on. Without --folds: the quick "
    f"look, methods x seeds on the source's val split -> {COMPARISON_TABLE} / {COMPARISON_SUMMARY} (mean ± std).")


def experiment_cmd(
    data: Path = typer.Option(..., "--data", help="ISIC 2019 folder, HAM10000 folder or MedMNIST .npz"),
    out: Path = typer.Option(..., "--out"),
    methods: str | None = typer.Option(None, "--methods", help="comma list (default: all)"),
    seeds: str = typer.Option("0,1,2", "--seeds", help="comma list"),
    backbone: str = typer.Option("resnet18", "--backbone"),
    epochs: int | None = typer.Option(None, "--epochs", min=1),
    splits: Path | None = typer.Option(None, "--splits"),
    folds: int | None = typer.Option(None, "--folds", min=2,
                                       help="k-fold lesion-grouped CV over train+val, epoch and post-hoc τ chosen on an "
                                            "inner split, paired Δ vs the first method (the augmentation "
                                            "experiment's protocol); without it: train -> val as before"),
    inner_val: float = typer.Option(0.15, "--inner-val", callback=between(0, 1, lo_open=True, hi_open=True),
                                    help="with --folds: inner split share"),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="with --folds: bootstrap resamples"),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1),
    resolution: int | None = typer.Option(None, "--resolution", min=8, help="px; default: the source's native size "
                                                                     "(HAM10000: 64)"),
    device: str | None = typer.Option(None, "--device"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="with --folds: training runs in parallel worker processes"),
    threads: int | None = typer.Option(None, "--threads", min=1),
    pretrained: str | None = typer.Option(None, "--pretrained", help=PRETRAINED_HELP),
    precision: str | None = typer.Option(None, "--precision", help=PRECISION_HELP),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    params = dict(locals())  # the options, before any other local exists
    from ..classify.methods import METHODS
    from ..evaluation.quick import run_experiment

    kw = set_options(threads=threads, batch_size=batch_size, device=device, resolution=resolution,
                     pretrained=pretrained, precision=precision)
    with fail_cleanly():
        seed_list = seeds_from("--seeds", seeds)
    # An experiment reuses the finished runs in OUT by design (it resumes), so OUT is only locked.
    with fail_cleanly(), claim(out, "experiment", resume=True):
        record_run(out, "experiment", params)
        if folds:
            from ..evaluation.methods import run_method_comparison

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
    app.command("evaluate", help=EVALUATE_HELP)(evaluate_cmd)
    app.command("experiment", help=EXPERIMENT_HELP)(experiment_cmd)
