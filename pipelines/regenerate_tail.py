"""regenerate_tail: given drifting tail classes and the current models, synthesise new candidates for exactly
those classes, select, retrain, evaluate against the current classifier, and export only if balanced
accuracy does not fall (gated with dsl.If). Triggered by the monitor when a tail class drifts.

Models come in by URI (dsl.importer): the diffusion model, the real-only classifier (the OOD feature
space) and the classifier now in service (the bar to clear).
"""

from typing import List

from kfp import dsl

from components import compare, evaluate, export, masks, split, validate, version

from .profiles import DEFAULTS
from .cluster import on_cpu_with_storage
from .synthesize import synthesize_and_retrain

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
    mask_size: int = DEFAULTS["diffusion_resolution"],
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
    synth = synthesize_and_retrain(
        data=data, splits=manifest, masks=lesion_masks.outputs["masks"], diffusion=diffusion.output,
        feature_classifier=feature_model.output, data_revision=data_revision, arm="regenerated", classes=classes,
        policy=policy, count=count, oversample=oversample, sampler=sampler, sampler_steps=sampler_steps,
        guidance=guidance, num_shards=num_shards, gamma=gamma, calibrate=calibrate, ood_score=ood_score,
        backbone=backbone, loss=loss, epochs=epochs, resolution=resolution, batch_size=batch_size, seed=seed,
        synthetic_ratio=synthetic_ratio, eval_split=eval_split, eval_bootstrap=eval_bootstrap)
    ev_cur = evaluate(model=current.output, data=data, splits=manifest, arm="current",
                      split_name=eval_split, bootstrap=eval_bootstrap).set_display_name("evaluate-current")
    table = compare(baseline=ev_cur.outputs["evaluation"], augmented=synth.outputs["evaluation"])
    with dsl.If(table.outputs["Output"] >= 0.0, name="balanced-accuracy-not-lower"):
        export(model=synth.outputs["model"], target=export_target)
        on_cpu_with_storage(version(synthetic=synth.outputs["selected"], data_revision=data_revision,
                                    content_hash=checked.outputs["Output"], remote=dvc_remote))
