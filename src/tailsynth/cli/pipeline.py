"""`tailsynth pipeline run|compile|submit` and the top-level `tailsynth main` (what `make run` calls).

The pipeline definitions are the `pipelines` and `components` packages of the same distribution; they are
imported inside the commands because kfp is an optional dependency.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ConfigError, MissingInputError, ServiceError
from ..outdir import claim
from ..pipeline_report import COMPARISON_FILE
from .common import err, fail_cleanly, overwrite_option

pipeline_app = typer.Typer(help="Kubeflow pipelines: run locally, compile, submit to a cluster.", no_args_is_help=True)

def _parse_sets(sets: list[str] | None) -> dict:
    """--set key=value pairs, values parsed as YAML scalars/lists (epochs=2, classes=[DF,VASC])."""
    import yaml

    out = {}
    for s in sets or []:
        if "=" not in s:
            raise ConfigError(f"--set {s!r}: expected KEY=VALUE")
        k, v = s.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def _check_profile(profile: str) -> None:
    # The profiles themselves (pipelines.profiles needs no kfp): a fixed list here once left out `ham`.
    from pipelines.profiles import PROFILES

    if profile not in PROFILES:
        raise ConfigError(f"--profile {profile!r}: choose one of {', '.join(PROFILES)}")


def check_out_dir(out: Path) -> Path:
    """Create OUT (or accept it) and prove it writable; any problem is one line naming OUT."""
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write the run folder there ({e.strerror or e})") from None
    return out


def _checked_sets(profile: str, sets: list[str] | None) -> dict:
    """--set values parsed and checked against PROFILE's parameters (names, types, ranges, choices), before the run
    folder is touched."""
    from pipelines.profiles import check_overrides

    try:
        return check_overrides(profile, _parse_sets(sets))
    except ConfigError as e:
        raise ConfigError(f"--set: {e}") from None


def run_pipeline(profile: str, data: Optional[Path], out: Path, data_revision: Optional[str] = None,
                 cache: bool = False, sets: Optional[list[str]] = None, overwrite: bool = False,
                 resume_hint: str = "pass --cache to resume it (its finished tasks are reused)") -> Path:
    """Check every parameter, then hold OUT (one writer; a finished run there only with OVERWRITE, or resumed with
    CACHE) and run train_augment locally."""
    _check_profile(profile)
    overrides = _checked_sets(profile, sets)
    from ..data import default_data_source

    data = data or default_data_source()
    if data is None:
        raise MissingInputError("no --data given and no ../shared/data beside the project; fetch DermaMNIST with "
                                "`tailsynth data fetch` and pass --data")
    check_out_dir(out)
    from pipelines.local import STAGE, run_local

    with claim(out, STAGE, overwrite=overwrite, resume=cache, resume_hint=resume_hint):
        return run_local(profile, data, out, data_revision=data_revision, cache=cache, **overrides)


@pipeline_app.command("run")
def run(local_: bool = typer.Option(False, "--local", help="run with KFP's local SubprocessRunner (required)"),
        profile: str = typer.Option("cpu", "--profile", help="tiny | cpu | ham | paper"),
        data: Optional[Path] = typer.Option(None, "--data", help="DermaMNIST .npz, a HAM10000 folder, a folder holding "
                                            "dermamnist/dermamnist.npz, or an ISIC 2019 folder (default ../shared/data)"),
        out: Path = typer.Option(..., "--out", help=f"run folder: report.md, report.html, {COMPARISON_FILE}, artifacts/"),
        data_revision: Optional[str] = typer.Option(None, "--data-revision",
                                                    help="DVC revision of the data (default: its content hash)"),
        cache: bool = typer.Option(False, "--cache", help="resume: reuse every task finished by an earlier run "
                                   "in the same --out (same parameters and input contents)"),
        sets: Optional[List[str]] = typer.Option(None, "--set", help="override a profile parameter, KEY=VALUE"),
        overwrite: bool = overwrite_option()) -> None:
    """Run train_augment on this machine and write the report."""
    if not local_:
        err.print("[red]error:[/red] only --local runs here; use `tailsynth pipeline submit` for a cluster")
        raise typer.Exit(2)
    with fail_cleanly():
        try:
            folder = run_pipeline(profile, data, out, data_revision, cache=cache, sets=sets, overwrite=overwrite)
        except RuntimeError as e:  # a stage failed inside KFP's local runner
            raise ServiceError(f"pipeline run failed: {e}") from e
    if cache:
        import json

        info = json.loads((folder / "task_cache.json").read_text())
        print(f"cached: {len(info['cached_tasks'])} task(s) reused ({', '.join(info['cached_tasks']) or 'none'}); "
              f"{len(info['executed_tasks'])} executed")
    print(f"report: {folder / 'report.md'}")
    print(f"html:   {folder / 'report.html'}")


@pipeline_app.command("compile")
def compile_(out: Optional[Path] = typer.Option(None, "--out", help="folder (default pipelines/compiled)")) -> None:
    """Write train_augment.yaml and regenerate_tail.yaml."""
    with fail_cleanly():
        from pipelines.compile import COMPILED_DIR, compile_all

        for p in compile_all(out or COMPILED_DIR):
            print(p)


@pipeline_app.command("submit")
def submit(host: str = typer.Option(..., "--host", help="Kubeflow Pipelines API URL"),
           token: Optional[str] = typer.Option(None, "--token", envvar="KFP_TOKEN", help="bearer token"),
           namespace: Optional[str] = typer.Option(None, "--namespace", help="Kubeflow profile namespace"),
           experiment: str = typer.Option("tailsynth", "--experiment"),
           profile: str = typer.Option("paper", "--profile", help="tiny | cpu | ham | paper"),
           data: str = typer.Option("/data/isic2019", "--data", help="data source path as the stage pods see it"),
           data_revision: str = typer.Option(..., "--data-revision", help="DVC revision of the data (cache key)"),
           sets: Optional[List[str]] = typer.Option(None, "--set", help="override a profile parameter, KEY=VALUE")) -> None:
    """Submit train_augment (compiled YAML from pipelines/compiled) to a cluster."""
    with fail_cleanly():
        _check_profile(profile)
        from pipelines.submit import submit as do_submit

        run_id = do_submit(host, data, data_revision, profile=profile, token=token, namespace=namespace,
                           experiment=experiment, **_checked_sets(profile, sets))
    print(f"run id: {run_id}")


def main_job(data: Path = typer.Option(Path("../shared/data"), "--data", help="real data root"),
             out: Path = typer.Option(Path("runs/main"), "--out", help="run folder"),
             overwrite: bool = typer.Option(False, "--overwrite", help="replace a finished run in --out (what "
                                            "`make run` does)")) -> None:
    """The main job: train_augment with the cpu profile on the real data, locally; prints the report path."""
    from ..pipeline_io import locate_real_data

    source = locate_real_data(data)
    if source is None:
        err.print(f"[red]error:[/red] no real data under {data}: expected {data}/dermamnist/dermamnist.npz or an "
                  "ISIC 2019 folder.\nFetch DermaMNIST with `tailsynth data fetch dermamnist --dest DIR`, then "
                  "`tailsynth main --data DIR`.", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    print(f"data: {source}")
    with fail_cleanly():
        try:
            folder = run_pipeline("cpu", source, out, overwrite=overwrite, resume_hint="")  # main has no --cache
        except RuntimeError as e:  # a stage failed inside KFP's local runner
            raise ServiceError(f"pipeline run failed: {e}") from e
    from ..pipeline_report import COMPARISON_FILE

    print((folder / COMPARISON_FILE).read_text())
    print(f"report: {folder / 'report.md'}")
    print(f"html:   {folder / 'report.html'}")


def register(app: typer.Typer) -> None:
    app.add_typer(pipeline_app, name="pipeline")
    app.command("main")(main_job)
