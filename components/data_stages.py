"""Real-data stages: validate (and stage), split, version."""

# No `from __future__ import annotations`: KFP reads the real annotation objects.
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from .base import cpu_component


@cpu_component
def validate(source: str, data_revision: str, max_per_class: int, seed: int,
             data: Output[Dataset], report: Output[Artifact], metrics: Output[Metrics]) -> str:
    """Check SOURCE with the data expectations and stage it as this run's data artifact.

    `data_revision` (a DVC revision or content hash computed by the caller) is an input only so that
    KFP's cache key changes when the external data changes. `max_per_class` > 0 subsamples (tiny profile).
    Returns the content hash of the staged bytes.
    """
    from tailsynth.data.validate import validate_source
    from tailsynth.hashing import data_revision as revision_of
    from tailsynth.pipeline_io import stage_source

    staged = stage_source(source, data.path, max_per_class=max_per_class, seed=seed)
    result = validate_source(staged, report=report.path)
    if not result.ok:
        problems = "; ".join(result.problems()[:10])
        raise ValueError(f"{source}: data validation failed: {problems}")
    digest = revision_of(staged)
    data.metadata.update({"source": source, "data_revision": data_revision, "content_hash": digest,
                          "max_per_class": max_per_class})
    metrics.log_metric("validation_ok", 1.0)
    for k, v in (result.summary or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            metrics.log_metric(f"validation.{k}", float(v))
    return digest


@cpu_component
def split(data: Input[Dataset], seed: int, val_fraction: float, test_fraction: float, train_fraction: float,
          splits: Output[Dataset], metrics: Output[Metrics]):
    """Lesion-grouped stratified split manifest (`image_id,label,group_id,split`); a source's own splits are kept.

    `train_fraction` < 1 keeps that stratified share of the train split (val/test untouched); the dropped images
    are absent from the manifest, so every later stage trains on fewer images and its cache key changes."""
    from tailsynth.data import ensure_splits, load_source
    from tailsynth.data.source import source_in
    from tailsynth.data.splits import groups_crossing_splits, subsample_train, write_split_manifest

    ds = ensure_splits(load_source(source_in(data.path)), seed=seed, val=val_fraction, test=test_fraction)
    ds = subsample_train(ds, train_fraction, seed=seed)
    crossing = groups_crossing_splits(ds.records)
    if crossing:
        raise ValueError(f"{len(crossing)} lesion groups straddle splits, e.g. {next(iter(crossing))}")
    write_split_manifest(ds, splits.path)
    for s in ds.splits:
        for cls, n in ds.class_counts(s).items():
            metrics.log_metric(f"{s}.{cls}", float(n))
    metrics.log_metric("train_fraction", float(train_fraction))
    splits.metadata.update({"splits": ds.splits, "train_fraction": train_fraction})


@cpu_component
def version(synthetic: Input[Dataset], data: Input[Dataset], candidates: Input[Dataset], diffusion: Input[Model],
            data_revision: str, content_hash: str, remote: str, record: Output[Artifact]) -> str:
    """Version the staged real data and the selected synthetic set with DVC and push both to REMOTE.

    REMOTE is s3://bucket/prefix or a local folder (local runs default to the checkout's DVC remote, a folder
    beside it). Empty: revisions are computed and recorded, nothing is pushed. Returns the synthetic set's DVC
    revision. Credentials (and AWS_ENDPOINT_URL for S3-compatible stores) come from the environment.
    """
    import json
    import os

    from tailsynth.data.versioning import version_run
    from tailsynth.diffusion.model import model_hash

    entry = version_run(data.path, synthetic.path, remote or None, data_revision=data_revision,
                        candidates=candidates.path, synthesizer=diffusion.path,
                        synthesizer_hash=model_hash(diffusion.path))
    entry["real_content_hash"] = content_hash
    os.makedirs(os.path.dirname(record.path) or ".", exist_ok=True)
    with open(record.path, "w") as f:
        json.dump(entry, f, indent=2, sort_keys=True)
    record.metadata.update({f"{k}_revision": v["md5"] for k, v in entry["sets"].items()})
    return entry["sets"]["synthetic"]["md5"]
