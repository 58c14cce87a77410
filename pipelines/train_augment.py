"""train_augment: real data -> baseline classifier + inpainting diffusion -> tail candidates (sharded)
-> OOD selection -> augmented classifier -> comparison, export, versioning, report.

`data_revision` is a parameter so that KFP's cache key changes with the external data (the data
itself is read from `source`, a path or URI the cache cannot see into).
"""


from typing import List

from kfp import dsl

from components import compare, evaluate, export, masks, report, split, train_classifier, train_diffusion, validate, version

from .profiles import DEFAULT_PROFILE, DEFAULTS
from .cluster import on_cpu_with_storage, on_gpu
from .synthesize import synthesize_and_retrain

NAME = "tailsynth-train-augment"


@dsl.pipeline(name=NAME, description="Diffusion-synthesised tail samples with OOD post-selection vs the real-only baseline.")
def train_augment(
    source: str,
    data_revision: str,
    profile: str = DEFAULT_PROFILE,
    seed: int = DEFAULTS["seed"],
    max_per_class: int = DEFAULTS["max_per_class"],
    val_fraction: float = DEFAULTS["val_fraction"],
    test_fraction: float = DEFAULTS["test_fraction"],
    backbone: str = DEFAULTS["backbone"],
    loss: str = DEFAULTS["loss"],
    epochs: int = DEFAULTS["epochs"],
    resolution: int = DEFAULTS["resolution"],
    batch_size: int = DEFAULTS["batch_size"],
    eval_split: str = DEFAULTS["eval_split"],
    eval_bootstrap: int = DEFAULTS["eval_bootstrap"],
    diffusion_size: str = DEFAULTS["diffusion_size"],
    diffusion_resolution: int = DEFAULTS["diffusion_resolution"],
    diffusion_steps: int = DEFAULTS["diffusion_steps"],
    diffusion_batch_size: int = DEFAULTS["diffusion_batch_size"],
    diffusion_max_minutes: float = DEFAULTS["diffusion_max_minutes"],
    classes: List[str] = DEFAULTS["classes"],
    policy: str = DEFAULTS["policy"],
    count: int = DEFAULTS["count"],
    oversample: float = DEFAULTS["oversample"],
    sampler: str = DEFAULTS["sampler"],
    sampler_steps: int = DEFAULTS["sampler_steps"],
    guidance: float = DEFAULTS["guidance"],
    num_shards: int = DEFAULTS["num_shards"],
    gamma: float = DEFAULTS["gamma"],
    calibrate: float = DEFAULTS["calibrate"],
    ood_score: str = DEFAULTS["ood_score"],
    synthetic_ratio: float = DEFAULTS["synthetic_ratio"],
    export_target: str = DEFAULTS["export_target"],
    dvc_remote: str = DEFAULTS["dvc_remote"],
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
                                       max_minutes=diffusion_max_minutes, seed=seed))
    synth = synthesize_and_retrain(
        data=data, splits=manifest, masks=lesion_masks.outputs["masks"], diffusion=diffusion.outputs["model"],
        feature_classifier=baseline.outputs["model"], data_revision=data_revision, arm="real+synthetic",
        classes=classes, policy=policy, count=count, oversample=oversample, sampler=sampler,
        sampler_steps=sampler_steps, guidance=guidance, num_shards=num_shards, gamma=gamma, calibrate=calibrate,
        ood_score=ood_score, backbone=backbone, loss=loss, epochs=epochs, resolution=resolution,
        batch_size=batch_size, seed=seed, synthetic_ratio=synthetic_ratio, eval_split=eval_split,
        eval_bootstrap=eval_bootstrap)

    ev_base = evaluate(model=baseline.outputs["model"], data=data, splits=manifest, arm="real-only",
                       split_name=eval_split, bootstrap=eval_bootstrap).set_display_name("evaluate-real-only")
    table = compare(baseline=ev_base.outputs["evaluation"], augmented=synth.outputs["evaluation"])
    # Serve whichever arm is better on the held-out split.
    with dsl.If(table.outputs["Output"] >= 0.0, name="augmented-not-worse"):
        export(model=synth.outputs["model"], target=export_target).set_display_name("export-augmented")
    with dsl.Else(name="baseline-better"):
        export(model=baseline.outputs["model"], target=export_target).set_display_name("export-real-only")

    record = on_cpu_with_storage(version(synthetic=synth.outputs["selected"], data_revision=data_revision,
                                         content_hash=checked.outputs["Output"], remote=dvc_remote))
    final = report(comparison=table.outputs["comparison"], baseline=ev_base.outputs["evaluation"],
                   augmented=synth.outputs["evaluation"], candidates=synth.outputs["candidates"],
                   selected=synth.outputs["selected"], version_record=record.outputs["record"],
                   diffusion=diffusion.outputs["model"], data_revision=data_revision, profile=profile)
    return final.outputs["report"]
