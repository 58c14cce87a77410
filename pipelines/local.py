"""Run train_augment on this machine with KFP's local SubprocessRunner (no Docker, no cluster).

Every task runs in this Python environment; artifacts land under OUT/artifacts/<pipeline>-<timestamp>/,
and the report folder is copied to OUT. With cache=True a run resumes: tasks whose component, parameters and
input-artifact contents match a finished task of an earlier run in the same OUT are reused (task_cache.py;
KFP 2.17's own local cache keys on artifact paths and never hits across runs). The report and run.json list the
reused tasks. On a cluster the backend caches by input fingerprint, which includes the `data_revision` parameter.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from tailsynth import hashing
from tailsynth.data.versioning import record_run_versions
from tailsynth.errors import DataError, ServiceError
from tailsynth.pipeline_io import locate_real_data
from tailsynth.pipeline_report import REPORT_FILES, VERSION_RECORD, finalize_run_report
from tailsynth.runinfo import record_stage

from .console import RunConsole, plain, shard_suffix
from .profiles import profile as resolve_profile

# The run's entry in OUT's run record, `runinfo.RUN_FILE` (its status: running, then succeeded or failed).
STAGE = "pipeline train_augment"


# The data layout a profile is made for, found first under a --data folder holding several (../shared/data).
PROFILE_DATA = {"ham": "ham10000"}


def resolve_data(data: str | Path, profile: str | None = None) -> Path:
    found = locate_real_data(data, prefer=PROFILE_DATA.get(profile or ""))
    if found is None:
        raise DataError(
            f"{data}: no real data found (looked for {Path(data) / 'dermamnist' / 'dermamnist.npz'}, a HAM10000 and an "
            "ISIC 2019 folder). Fetch DermaMNIST with `tailsynth data fetch dermamnist --dest DIR`, or point --data at "
            "an ISIC 2019 or HAM10000 folder.")
    return found.resolve()


def default_dvc_remote() -> str:
    """The checkout's default DVC remote (a folder beside it unless `tailsynth data remote-s3 --default` changed it);
    an S3 remote's endpoint reaches the version stage through AWS_ENDPOINT_URL. Empty when there is no checkout."""
    import os

    from tailsynth.data.versioning import VersioningError, default_remote

    try:
        spec = default_remote(Path(__file__).resolve().parents[1])
    except VersioningError:
        return ""
    if spec.get("endpointurl"):
        os.environ.setdefault("AWS_ENDPOINT_URL", spec["endpointurl"])
    return spec["url"]


def resolve_synthesizer(path: str | Path) -> Path:
    """The shipped synthesizer as an absolute path (tasks run in other working directories)."""
    from tailsynth.diffusion.model import META_FILE

    p = Path(path).expanduser().resolve()
    if not (p / META_FILE).is_file():
        raise DataError(f"{path}: no synthesizer there ({META_FILE} missing); pass --set diffusion_model= to train "
                        "one inside the run, or run from the repository root, where models/synth-dermamnist lives")
    return p


def task_timings(pipeline_run_dir: Path, started: float, labels: dict[str, str] | None = None) -> list[dict]:
    """Per-task wall time of a local run, from the order in which tasks wrote their executor_output.json: the
    local runner runs tasks one after another (ParallelFor iterations at the same time), so each task's time is
    its finish minus the previous finish (the run's start for the first). Tasks reused from the cache wrote
    nothing in this run and do not appear. LABELS ({task folder: name}, from `stage_labels`) name the rows."""
    done = sorted((f.stat().st_mtime, f.parent.relative_to(pipeline_run_dir))
                  for f in Path(pipeline_run_dir).rglob("executor_output.json"))
    rows, prev = [], started
    for finished, rel in done:
        name = (labels or {}).get(rel.name, rel.name) + shard_suffix(rel.parts[:-1])
        rows.append({"stage": name, "seconds": round(max(0.0, finished - prev), 1)})
        prev = max(prev, finished)
    return rows


def stage_labels(spec: dict) -> dict[str, str]:
    """{task folder of the local runner: readable name} from a compiled pipeline SPEC. The runner names a task's
    folder after its component (`evaluate-2-2`, `train-classifier-augmented-3`) because one component serves
    several arms; the name here is the task's display name, with the arm of the sub-pipeline it runs in."""
    labels: dict[str, str] = {}

    def walk(dag: dict, arm: str | None) -> None:
        for task in dag.get("tasks", {}).values():
            comp = task["componentRef"]["name"]
            inner = spec["components"][comp].get("dag")
            const = task.get("inputs", {}).get("parameters", {}).get("arm", {}).get("runtimeValue", {})
            if inner:
                walk(inner, const.get("constant", arm))
            else:
                label = task["taskInfo"]["name"]
                labels[comp.removeprefix("comp-")] = f"{label} ({arm})" if arm else label

    walk(spec["root"]["dag"], None)
    return labels


def compiled_stage_labels(name: str = "train_augment") -> dict[str, str]:
    """`stage_labels` of the committed compiled pipeline NAME (a test keeps it equal to the source)."""
    import yaml

    from .compile import COMPILED_DIR

    path = COMPILED_DIR / f"{name}.yaml"
    return stage_labels(next(yaml.safe_load_all(path.read_text()))) if path.is_file() else {}


def timing_table(rows: list[dict], wall: float) -> str:
    width = max([len(r["stage"]) for r in rows] + [len("total (wall)")])
    lines = [f"{'stage':<{width}}  seconds"] + [f"{r['stage']:<{width}}  {r['seconds']:7.1f}" for r in rows]
    return "\n".join(lines + [f"{'total (wall)':<{width}}  {wall:7.1f}"])


def local_parameters(profile: str, **overrides) -> dict:
    """PROFILE's parameters with OVERRIDES, completed for this machine: the checkout's DVC remote, the synthesizer as
    an absolute path and its weights' hash (part of the cache keys)."""
    params = resolve_profile(profile, **overrides)
    if not params.get("dvc_remote"):
        params["dvc_remote"] = default_dvc_remote()
    params["diffusion_model"] = str(resolve_synthesizer(params["diffusion_model"])) if params.get("diffusion_model") else ""
    if params.get("serve_evidence"):  # checked before the run starts, absolute for the tasks
        from tailsynth.evaluation.promotion import evidence_record

        try:
            params["serve_evidence"] = str(evidence_record(Path(params["serve_evidence"]).resolve()))
        except DataError as e:
            raise DataError(f"serve_evidence {params['serve_evidence']!r}: {e} ('' for the single-split rule)") from e
    if params["diffusion_model"] and not params.get("diffusion_model_hash"):
        from tailsynth.diffusion.model import model_hash

        params["diffusion_model_hash"] = model_hash(params["diffusion_model"])
    return params


def run_local(profile: str, data: str | Path, out: str | Path, data_revision: str | None = None,
              cache: bool = False, **overrides) -> Path:
    """Run train_augment locally with PROFILE on DATA; returns OUT holding report.md/.html and the arms table
    (`pipeline_report.COMPARISON_FILE`)."""
    params = local_parameters(profile, **overrides)
    source = resolve_data(data, profile)
    revision = data_revision or hashing.data_revision(source)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    resolved = {"source": str(source), "data_revision": revision, **params}
    # Everything above only checks and resolves (no run record yet); from here the run has started, and a run that
    # fails is recorded as failed, never left as `running`.
    record_stage(out, STAGE, resolved, data_revision=revision, status="running")
    try:
        return _run_started(out, resolved, revision, params, cache)
    except BaseException as e:
        record_stage(out, STAGE, resolved, data_revision=revision, status="failed",
                     error=f"{type(e).__name__}: {plain(str(e))}"[:2000])
        raise


def _run_started(out: Path, resolved: dict, revision: str, params: dict, cache: bool) -> Path:
    """The part of `run_local` after the run record says `running`: the pipeline itself and the run's report."""
    from kfp import local

    from .train_augment import train_augment

    root = out / "artifacts"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), enable_caching=cache,
               cache_root=str(out / ".kfp_cache"))
    task_cache = None
    if cache:
        from .task_cache import install

        task_cache = install(out / ".kfp_cache")
    labels = compiled_stage_labels()
    t0 = time.time()
    with RunConsole(out, labels) as console:
        try:
            task = train_augment(**resolved)
        except RuntimeError as e:  # the runner's "Inner task failed: ..." line, coloured for its own log
            raise RuntimeError(f"{plain(str(e))} The local runner's full output: {console.log_path}") from e
    wall = time.time() - t0
    report_dir = Path(task.output.path)
    for f in report_dir.iterdir():
        if f.is_file():
            shutil.copyfile(f, out / f.name)
    missing = [f for f in REPORT_FILES if not (out / f).is_file()]
    if missing:
        raise ServiceError(f"{report_dir}: the report stage did not write {', '.join(missing)}")
    timings = task_timings(report_dir.parents[1], t0, labels)
    record_stage(out, STAGE, resolved, data_revision=revision, status="succeeded",
                 wall_seconds=round(wall, 1), report_stage_dir=str(report_dir), pipeline_root=str(root),
                 task_seconds=timings)
    if (out / VERSION_RECORD).is_file():
        record_run_versions(out, json.loads((out / VERSION_RECORD).read_text()),
                            params={"remote": params["dvc_remote"], "data_revision": revision})
    # Adds the exported model card, its lineage, the task timings and the links only the whole run knows.
    finalize_run_report(out, timings=timings)
    print(timing_table(timings, wall), file=sys.stderr, flush=True)
    if task_cache is not None:
        summary = task_cache.summary()
        (out / "task_cache.json").write_text(json.dumps(summary, indent=2))
        with open(out / "report.md", "a", encoding="utf-8") as f:
            f.write("\n## Task cache\n\n"
                    f"Reused from an earlier run: {', '.join(summary['cached_tasks']) or 'none'}.  \n"
                    f"Executed in this run: {', '.join(summary['executed_tasks']) or 'none'}.\n")
    return out
