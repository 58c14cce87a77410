"""train_augment: real data -> baseline classifier + inpainting diffusion -> tail candidates (sharded)
-> OOD selection -> augmented classifier -> comparison, export, versioning, report.

`data_revision` is a parameter so that KFP's cache key changes with the external data (the data
itself is read from `source`, a path or URI the cache cannot see into).
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
    report,
    select,
    shard_plan,
    split,
    train_classifier,
    train_classifier_augmented,
    train_diffusion,
    validate,
    version,
)

from .cluster import on_cpu_with_storage, on_gpu

NAME = "tailsynth-train-augment"


@dsl.pipeline(name=NAME, description="Diffusion-synthesised tail samples with OOD post-selection vs the real-only baseline.")
def train_augment(
    source: str,
    data_revision: str,
    profile: str = "cpu",
    seed: int = 0,
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
    diffusion_size: str = "small",
    diffusion_resolution: int = 32,
    diffusion_steps: int = 800,
    diffusion_batch_size: int = 32,
    diffusion_max_minutes: float = 3.5,
    diffusion_model: str = "",
    diffusion_finetune_minutes: float = 0.0,
    classes: List[str] = ["DF", "VASC", "AK"],
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
) -> dsl.Artifact:
    checked = validate(source=source, data_revision=data_revision, max_per_class=max_per_class, seed=seed)
    data = checked.outputs["data"]
    parts = split(data=data, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    manifest = parts.outputs["splits"]

    baseline = on_gpu(train_classifier(data=data, splits=manifest, backbone=backbone, loss=loss, epochs=epochs,
                                       resolution=resolution, batch_size=batch_size, seed=seed,
                                       data_revision=data_revision))
    lesion_masks = masks(data=data, size=diffusion_resolution)
    diffusion = on_gpu(train_diffusion(data=data, splits=manifest, masks=lesion_masks.outputs["masks"],
                                       model_size=diffusion_size, resolution=diffusion_resolution,
                                       steps=diffusion_steps, batch_size=diffusion_batch_size,
                                       max_minutes=diffusion_max_minutes, seed=seed,
                                       pretrained=diffusion_model, finetune_minutes=diffusion_finetune_minutes))
    plan = shard_plan(num_shards=num_shards)
    with dsl.ParallelFor(plan.output, name="generation-shards") as shard:
        shard_task = on_gpu(generate(model=diffusion.outputs["model"], data=data, splits=manifest, masks=lesion_masks.outputs["masks"],
                                     classes=classes, policy=policy, count=count, oversample=oversample,
                                     mode=generate_mode, strength=strength, sampler=sampler,
                                     sampler_steps=sampler_steps, guidance=guidance, seed=seed,
                                     shard=shard, num_shards=num_shards))
    candidates = merge(shards=dsl.Collected(shard_task.outputs["candidates"]))
    chosen = select(candidates=candidates.outputs["candidates"], data=data, splits=manifest,
                    classifier=baseline.outputs["model"], gamma=gamma, calibrate=calibrate, score=ood_score)
    augmented = on_gpu(train_classifier_augmented(
        data=data, splits=manifest, synthetic=chosen.outputs["selected"], backbone=backbone, loss=loss, epochs=epochs,
        resolution=resolution, batch_size=batch_size, seed=seed, synthetic_ratio=synthetic_ratio,
        data_revision=data_revision))

    ev_base = evaluate(model=baseline.outputs["model"], data=data, splits=manifest, arm="real-only",
                       split_name=eval_split, bootstrap=eval_bootstrap).set_display_name("evaluate-real-only")
    ev_aug = evaluate(model=augmented.outputs["model"], data=data, splits=manifest, arm="real+synthetic",
                      split_name=eval_split, bootstrap=eval_bootstrap).set_display_name("evaluate-real-synthetic")
    table = compare(baseline=ev_base.outputs["evaluation"], augmented=ev_aug.outputs["evaluation"])
    # Serve whichever arm is better on the held-out split.
    with dsl.If(table.outputs["Output"] >= 0.0, name="augmented-not-worse"):
        export(model=augmented.outputs["model"], target=export_target).set_display_name("export-augmented")
    with dsl.Else(name="baseline-better"):
        export(model=baseline.outputs["model"], target=export_target).set_display_name("export-real-only")

    record = on_cpu_with_storage(version(synthetic=chosen.outputs["selected"], data_revision=data_revision,
                                         content_hash=checked.outputs["Output"], remote=dvc_remote))
    final = report(comparison=table.outputs["comparison"], baseline=ev_base.outputs["evaluation"],
                   augmented=ev_aug.outputs["evaluation"], candidates=candidates.outputs["candidates"],
                   selected=chosen.outputs["selected"], version_record=record.outputs["record"],
                   diffusion=diffusion.outputs["model"], data_revision=data_revision, profile=profile)
    return final.outputs["report"]
