"""regenerate_tail: given drifting tail classes and the current models, synthesise new candidates for exactly
those classes, select, retrain, evaluate against the current classifier, and export only if balanced
accuracy does not fall (gated with dsl.If). Triggered by the monitor when a tail class drifts.

Models come in by URI (dsl.importer): the diffusion model, the real-only classifier (the OOD feature
space) and the classifier now in service (the bar to clear).
"""

from typing import List

from kfp import dsl

from components import (
    compare,
    evaluate,
    export,
    generate,
    masks,
    merge,
    select,
    shard_plan,
    split,
    train_classifier_augmented,
    validate,
    version,
)

from .cluster import on_cpu_with_storage, on_gpu

NAME = "tailsynth-regenerate-tail"


@dsl.pipeline(name=NAME, description="Regenerate synthetic data for drifting tail classes; export only if not worse.")
def regenerate_tail(
    source: str,
    data_revision: str,
    classes: List[str],
    diffusion_model_uri: str,
    feature_classifier_uri: str,
    current_model_uri: str,
    seed: int = 1,
    max_per_class: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    backbone: str = "resnet18",
    loss: str = "ce",
    epochs: int = 8,
    resolution: int = 32,
    batch_size: int = 128,
    eval_split: str = "val",
    eval_bootstrap: int = 200,
    mask_size: int = 32,
    policy: str = "fill-to-head",
    count: int = 60,
    oversample: float = 1.0,
    generate_mode: str = "inpaint",
    strength: float = 0.5,
    sampler: str = "ddim",
    sampler_steps: int = 15,
    guidance: float = 2.0,
    num_shards: int = 2,
    gamma: float = 0.5,
    calibrate: float = 0.0,
    ood_score: str = "mahalanobis",
    synthetic_ratio: float = 0.0,
    export_target: str = "local",
    dvc_remote: str = "",
):
    diffusion = dsl.importer(artifact_uri=diffusion_model_uri, artifact_class=dsl.Model, reimport=False)
    feature_model = dsl.importer(artifact_uri=feature_classifier_uri, artifact_class=dsl.Model,
                                 reimport=False).set_display_name("import-feature-classifier")
    current = dsl.importer(artifact_uri=current_model_uri, artifact_class=dsl.Model,
                           reimport=False).set_display_name("import-current-classifier")

    checked = validate(source=source, data_revision=data_revision, max_per_class=max_per_class, seed=0)
    data = checked.outputs["data"]
    manifest = split(data=data, seed=0, val_fraction=val_fraction, test_fraction=test_fraction).outputs["splits"]
    lesion_masks = masks(data=data, size=mask_size)
    plan = shard_plan(num_shards=num_shards)
    with dsl.ParallelFor(plan.output, name="generation-shards") as shard:
        shard_task = on_gpu(generate(model=diffusion.output, data=data, splits=manifest, masks=lesion_masks.outputs["masks"],
                                     classes=classes, policy=policy, count=count, oversample=oversample,
                                     mode=generate_mode, strength=strength, sampler=sampler,
                                     sampler_steps=sampler_steps, guidance=guidance, seed=seed,
                                     shard=shard, num_shards=num_shards))
    candidates = merge(shards=dsl.Collected(shard_task.outputs["candidates"]))
    chosen = select(candidates=candidates.outputs["candidates"], data=data, splits=manifest,
                    classifier=feature_model.output, gamma=gamma, calibrate=calibrate, score=ood_score)
    retrained = on_gpu(train_classifier_augmented(
        data=data, splits=manifest, synthetic=chosen.outputs["selected"], backbone=backbone, loss=loss, epochs=epochs,
        resolution=resolution, batch_size=batch_size, seed=seed, synthetic_ratio=synthetic_ratio,
        data_revision=data_revision))
    ev_cur = evaluate(model=current.output, data=data, splits=manifest, arm="current",
                      split_name=eval_split, bootstrap=eval_bootstrap).set_display_name("evaluate-current")
    ev_new = evaluate(model=retrained.outputs["model"], data=data, splits=manifest, arm="regenerated",
                      split_name=eval_split, bootstrap=eval_bootstrap).set_display_name("evaluate-regenerated")
    table = compare(baseline=ev_cur.outputs["evaluation"], augmented=ev_new.outputs["evaluation"])
    with dsl.If(table.outputs["Output"] >= 0.0, name="balanced-accuracy-not-lower"):
        export(model=retrained.outputs["model"], target=export_target)
        on_cpu_with_storage(version(synthetic=chosen.outputs["selected"], data_revision=data_revision,
                                    content_hash=checked.outputs["Output"], remote=dvc_remote))
