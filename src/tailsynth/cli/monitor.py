"""`tailsynth monitor ...`: reference records, replay scoring, per-window drift reports and regeneration policy."""

from __future__ import annotations

from pathlib import Path

import typer

from ..outdir import claim
from .common import fail_cleanly, print_json, record_run

monitor_app = typer.Typer(help="Prediction records, per-class drift reports (Evidently), regeneration of drifting "
                          "tail classes.", no_args_is_help=True)


@monitor_app.command("reference")
def reference(model: Path = typer.Option(..., "--model", help="classifier model folder"),
              data: Path = typer.Option(..., "--data", help="real data source (npz or ISIC folder)"),
              split: str = typer.Option("val", "--split"),
              splits: Path | None = typer.Option(None, "--splits", help="split manifest CSV image_id,split"),
              dims: int = typer.Option(5, "--dims", min=1, help="embedding dimensions (PCA of penultimate features)")) -> None:
    """Fit the embedding and write the model's reference records to MODEL/monitor/."""
    from ..monitor.reference import build_reference

    with fail_cleanly():
        print_json(build_reference(model, data, split=split, splits=splits, dims=dims))


@monitor_app.command("score")
def score(model: Path = typer.Option(..., "--model", help="classifier model folder (with monitor/embedding.npz)"),
          data: Path = typer.Option(..., "--data", help="data source to replay"),
          split: str = typer.Option("val", "--split"),
          shift: list[str] | None = typer.Option(None, "--shift", help="NAME:CLASS[=STRENGTH]: brightness, blur, "
                                                    "hue, contrast or share, applied to CLASS only; repeatable"),
          out: str = typer.Option(..., "--out", help="prediction log: JSONL path or s3://bucket/prefix"),
          splits: Path | None = typer.Option(None, "--splits", help="split manifest CSV image_id,split"),
          seed: int = typer.Option(0, "--seed", min=0),
          no_labels: bool = typer.Option(False, "--no-labels", help="leave ground-truth labels out of the records"),
          limit: int | None = typer.Option(None, "--limit", min=1)) -> None:
    """Write prediction records for a data set (replay, drills)."""
    from ..monitor.score import score_dataset

    with fail_cleanly():
        res = score_dataset(model, data, split=split, shift=shift, out=out, splits=splits, seed=seed,
                            with_labels=not no_labels, limit=limit)
    res.pop("records_list", None)
    print_json(res)


@monitor_app.command("report")
def report(ctx: typer.Context,
           log: str = typer.Option(..., "--log", help="prediction log: JSONL file, folder, or s3:// prefix"),
           reference: str = typer.Option(..., "--reference", help="reference records (MODEL/monitor/reference.jsonl "
                                          "or s3://...)"),
           out: Path = typer.Option(..., "--out", help="window folder: report.html, summary.json, evidently/"),
           trigger: str = typer.Option("none", "--trigger", help="none | dry-run | local | kfp"),
           config: Path | None = typer.Option(None, "--config", help="monitor policy YAML"),
           window: str | None = typer.Option(None, "--window", help="window id (default: from the records)"),
           index: Path | None = typer.Option(None, "--index", help="folder of windows for index.html "
                                                "(default: OUT's parent)"),
           publish: str | None = typer.Option(None, "--publish", help="s3://bucket/prefix to upload the index "
                                                 "folder to"),
           no_evidently: bool = typer.Option(False, "--no-evidently", help="skip the Evidently HTML pages")) -> None:
    """Per-class drift report for one window, and the regeneration decisions."""
    from ..monitor.policy import TRIGGER_MODES
    from ..monitor.report import build_window_report

    if trigger not in TRIGGER_MODES:
        choices = f"{', '.join(TRIGGER_MODES[:-1])} or {TRIGGER_MODES[-1]}"
        raise typer.BadParameter(f"{trigger!r}: expected {choices}", param_hint="--trigger")
    # A window's report is recomputed by design (a later run re-reads the records and the audit log), so a finished
    # window folder is not refused: OUT is only locked against a second writer at the same time.
    with fail_cleanly(), claim(out, "monitor report", resume=True):
        s = build_window_report(log, reference, out, submitter=_submitter(trigger), config=config, window=window, index=index,
                         publish_to=publish, evidently=not no_evidently)
        record_run(out, "monitor report", ctx.params, window=s["window"], trigger=s["trigger"]["status"])
    print_json({"window": s["window"], "flagged": s["flagged"],
                "decisions": [{k: d[k] for k in ("class", "action", "trigger_status")} for d in s["decisions"]],
                "trigger": s["trigger"]["status"], "skipped_lines": s["data_quality"]["skipped_lines"],
                "out": str(out)})


def _submitter(mode: str):
    """--trigger MODE as a submitter; they live with the pipelines (an adapter), not in the library."""
    from pipelines.trigger import submitter_for

    return submitter_for(mode)


def register(app: typer.Typer) -> None:
    app.add_typer(monitor_app, name="monitor")
