"""`tailsynth data ...`: fetch, validate, split, stats, push, pull, remote-s3, revision."""

from __future__ import annotations

from pathlib import Path

import typer

from ..runinfo import RUN_FILE
from .common import POSITIVE, between, err, fail_cleanly, print_json

data_app = typer.Typer(help="Real data: fetch, validate, split, stats, DVC push/pull.", no_args_is_help=True)

SOURCE_HELP = "ISIC 2019 folder, HAM10000 folder or MedMNIST .npz"
PART_HELP = "ISIC folder holding several ground-truth tables: training | test"


@data_app.command("stats")
def stats(source: Path = typer.Argument(..., help=SOURCE_HELP),
          as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
          part: str | None = typer.Option(None, help=PART_HELP)) -> None:
    """Class counts per split (and lesions per class, for sources with lesion ids)."""
    from ..data import load_source

    with fail_cleanly():
        st = load_source(source, part=part).stats()
    if as_json:
        print_json(st)
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{st['source']} ({st['format']})")
    classes = list(next(iter(st["splits"].values())).keys()) if st["splits"] else []
    t.add_column("split")
    for c in classes:
        t.add_column(c, justify="right")
    t.add_column("total", justify="right")
    for s, counts in st["splits"].items():
        t.add_row(s, *[str(counts[c]) for c in classes], str(sum(counts.values())))
    if "lesions" in st:  # sources with lesion ids: a lesion may have several images
        t.add_row("lesions", *[str(st["lesions"].get(c, 0)) for c in classes], str(sum(st["lesions"].values())))
    Console().print(t)


@data_app.command("fetch")
def fetch(dataset: str = typer.Argument(..., help="dermamnist | isic2019"),
          dest: Path = typer.Option(..., "--dest", help="folder to put the data in"),
          timeout: float = typer.Option(30.0, callback=POSITIVE, help="network timeout per connection, seconds"),
          base_url: str | None = typer.Option(None, help="a mirror holding the official file names"),
          labels_only: bool = typer.Option(False, help="isic2019: only the ground-truth and metadata CSVs"),
          with_test: bool = typer.Option(False, help="isic2019: also the test set"),
          keep_archives: bool = typer.Option(False, help="keep downloaded zip files after extracting")) -> None:
    """Download a data set from its official location; files already in DEST are used as they are."""
    from ..data.fetch import fetch as run

    with fail_cleanly():
        rep = run(dataset, dest, timeout=timeout, base_url=base_url, labels_only=labels_only,
                  with_test=with_test, keep_archives=keep_archives, progress=True)
    print_json(rep)


@data_app.command("validate")
def validate(source: Path = typer.Argument(..., help=SOURCE_HELP),
             report: Path | None = typer.Option(None, help="folder for the JSON summary, HTML report, "
                                                               "quarantine.csv"),
             drop_invalid: bool = typer.Option(False, "--drop-invalid",
                                               help="drop quarantined (missing/corrupt/truncated) images "
                                                    "instead of failing"),
             splits: Path | None = typer.Option(None, help="split manifest CSV to check for lesions in "
                                                              "two splits"),
             part: str | None = typer.Option(None, help=PART_HELP),
             min_size: int = typer.Option(28, min=1, help="smallest allowed image side, pixels"),
             as_json: bool = typer.Option(False, "--json", help="print the summary as JSON")) -> None:
    """Great Expectations checks; exit 0 when sound, else 1 with every bad file/row named on stderr."""
    from ..data.validate import validate_source

    with fail_cleanly():
        res = validate_source(source, report=report, drop_invalid=drop_invalid, splits=splits, part=part,
                              min_size=min_size, progress=True)
    for line in res.problems():
        err.print(f"[red]invalid:[/red] {line}", markup=True, highlight=False, soft_wrap=True)
    for q in res.quarantined:
        if q["image_id"] in set(res.dropped):
            err.print(f"[yellow]dropped:[/yellow] {q['path']} ({q['reason']})", markup=True, highlight=False,
                      soft_wrap=True)
    s = res.summary
    if as_json:
        print_json(s)
    else:
        verdict = "passed" if res.ok else "FAILED"
        print(f"validation {verdict}: {s['source']} ({s['format']}), {s['rows']} rows, "
              f"{s['checks_failed']}/{s['checks_total']} checks failed, {len(s['quarantined'])} quarantined, "
              f"{len(s['dropped'])} dropped, {s['seconds']} s" + (f"; report in {report}" if report else ""))
    if not res.ok:
        raise typer.Exit(1)


@data_app.command("split")
def split(source: Path = typer.Argument(..., help=SOURCE_HELP),
          out: Path = typer.Option(..., "--out", help="manifest CSV to write (image_id,label,group_id,split)"),
          val: float = typer.Option(0.15, callback=between(0, 1, hi_open=True),
                                    help="validation fraction (with --kfold: of the folds other than the test fold)"),
          test: float | None = typer.Option(None, callback=between(0, 1, hi_open=True),
                                            help="test fraction (0 for none; default 0.15, none with --kfold)"),
          seed: int = typer.Option(0, min=0, help="random seed (same seed, same split)"),
          kfold: int | None = typer.Option(None, min=2, help="k grouped stratified folds; <out>.fold<i>.csv has "
                                                         "fold i as test, as the experiments use them"),
          imbalance_ratio: float | None = typer.Option(None, callback=between(1), help="first subsample to a long tail with "
                                                                      "this head/tail ratio"),
          isic_proportions: bool = typer.Option(False, help="first subsample to ISIC 2019's class shares"),
          exclude: Path | None = typer.Option(None, help="CSV with image_id column to leave out (e.g. "
                                                            "quarantine.csv)"),
          resplit: bool = typer.Option(False, help="re-split sources that have their own train/val"),
          part: str | None = typer.Option(None, help=PART_HELP)) -> None:
    """Lesion-grouped, stratified train/val/test (or k-fold) split manifest."""
    from ..data.splits import split_source

    with fail_cleanly():
        rep = split_source(source, out, val=val, test=test, seed=seed, kfold=kfold,
                           imbalance_ratio=imbalance_ratio, isic_proportions=isic_proportions,
                           exclude=exclude, resplit=resplit, part=part)
    print_json(rep)


def _versioning_call(fn, **kw):
    with fail_cleanly():
        return fn(**kw)


@data_app.command("push")
def push(targets: list[str] | None = typer.Argument(None, help=".dvc files or paths (default: all)"),
         repo: Path = typer.Option(Path("."), help="repository root"),
         remote: str | None = typer.Option(None, "--remote", "-r", help="DVC remote (default: core.remote)"),
         jobs: int | None = typer.Option(None, "--jobs", "-j", min=1, help="parallel transfers")) -> None:
    """`dvc push` with clear errors for missing credentials, unreachable endpoint, missing bucket."""
    from ..data.versioning import push as run

    print_json(_versioning_call(run, repo=repo, remote=remote, targets=targets, jobs=jobs))


PULL_HELP = ("`dvc pull` with clear errors for missing credentials, unreachable endpoint, missing bucket; with --run, "
             f"restore a run's synthetic (or real) set byte-identical from the revision in its {RUN_FILE}.")


@data_app.command("pull", help=PULL_HELP)
def pull(targets: list[str] | None = typer.Argument(None, help=".dvc files or paths (default: all)"),
         repo: Path = typer.Option(Path("."), help="repository root"),
         remote: str | None = typer.Option(None, "--remote", "-r", help="DVC remote (default: core.remote; with "
                                                                         "--run: a URL or folder, default the run's)"),
         jobs: int | None = typer.Option(None, "--jobs", "-j", min=1, help="parallel transfers"),
         run: Path | None = typer.Option(None, "--run", help="a run folder: restore the data set it versioned"),
         what: str = typer.Option("synthetic", "--set", help="with --run: synthetic | real"),
         dest: Path | None = typer.Option(None, "--dest", help="with --run: an absent or empty folder "
                                                                 "(default RUN/restored/SET)")) -> None:
    if run is not None:
        from ..data.versioning import pull_run

        print_json(_versioning_call(pull_run, run_dir=run, dest=dest or run / "restored" / what, what=what,
                                    remote=remote))
        return
    from ..data.versioning import pull as do_pull

    print_json(_versioning_call(do_pull, repo=repo, remote=remote, targets=targets, jobs=jobs))


@data_app.command("remote-s3")
def remote_s3(bucket: str = typer.Option(..., "--bucket", help="S3 bucket name"),
              endpoint_url: str | None = typer.Option(None, "--endpoint-url",
                                                          help="S3-compatible endpoint (MinIO, Ceph...)"),
              name: str = typer.Option("s3", help="remote name"),
              prefix: str = typer.Option("tailsynth", help="key prefix inside the bucket"),
              region: str | None = typer.Option(None, help="AWS region"),
              default: bool = typer.Option(False, "--default", help="make it the default remote"),
              repo: Path = typer.Option(Path("."), help="repository root")) -> None:
    """Add an S3 DVC remote; credentials are read from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY at use."""
    from ..data.versioning import setup_s3_remote

    print_json(_versioning_call(setup_s3_remote, bucket=bucket, endpoint_url=endpoint_url, repo=repo, name=name,
                                prefix=prefix, region=region, default=default))


@data_app.command("revision")
def revision(path: Path = typer.Argument(..., help="file or folder")) -> None:
    """Content hash (sha256) of a file or folder, independent of timestamps and location."""
    from ..data.versioning import data_revision

    with fail_cleanly():
        print(data_revision(path))


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
