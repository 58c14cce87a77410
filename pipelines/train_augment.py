"""train_augment: real data -> baseline classifier + inpainting diffusion -> tail candidates (sharded)
-> OOD selection -> augmented classifier -> comparison, export, versioning, report.

Its parameters are the profile's (pipelines/profiles.py), with the default profile's values as defaults.
`data_revision` is a parameter so that KFP's cache key changes with the external data (the data
itself is read from `source`, a path or URI the cache cannot see into).
"""

from kfp import dsl

from components import (
    compare_with_control,
    evaluate,
    export,
    masks,
    report,
    split,
    train_classifier,
    train_classifier_augmented,
    train_diffusion,
    validate,
    version,
)

from .cluster import on_cpu_with_storage, on_gpu
from .profiles import DEFAULT_PROFILE, DEFAULTS, SYNTHESIS_PARAMETERS, pipeline_parameters
from .synthesize import synthesize_and_retrain

NAME = "tailsynth-train-augment"


@dsl.pipeline(name=NAME, description="Diffusion-synthesised tail samples with OOD post-selection vs the real-only baseline.")
@pipeline_parameters(required={"source": str, "data_revision": str}, extra={"profile": (str, DEFAULT_PROFILE)},
                     shared=list(DEFAULTS))
def train_augment(**p) -> dsl.Artifact:
    revision, seed = p["data_revision"], p["seed"]
    checked = validate(source=p["source"], data_revision=revision, max_per_class=p["max_per_class"], seed=seed)
    data = checked.outputs["data"]
    manifest = split(data=data, seed=seed, val_fraction=p["val_fraction"],
                     test_fraction=p["test_fraction"], train_fraction=p["train_fraction"]).outputs["splits"]

    baseline = on_gpu(train_classifier(data=data, splits=manifest, backbone=p["backbone"], pretrained=p["pretrained"],
                                       precision=p["precision"], loss=p["loss"],
                                       sampler=p["classifier_sampler"], epochs=p["epochs"], resolution=p["resolution"], batch_size=p["batch_size"],
                                       seed=seed, data_revision=revision))
    lesion_masks = masks(data=data, size=p["diffusion_resolution"])
    diffusion = on_gpu(train_diffusion(data=data, splits=manifest, masks=lesion_masks.outputs["masks"],
                                       model_size=p["diffusion_size"], resolution=p["diffusion_resolution"],
                                       steps=p["diffusion_steps"], batch_size=p["diffusion_batch_size"],
                                       max_minutes=p["diffusion_max_minutes"], seed=seed,
                                       pretrained=p["diffusion_model"], pretrained_hash=p["diffusion_model_hash"],
                                       finetune_minutes=p["diffusion_finetune_minutes"]))
    synth = synthesize_and_retrain(
        data=data, splits=manifest, masks=lesion_masks.outputs["masks"], diffusion=diffusion.outputs["model"],
        feature_classifier=baseline.outputs["model"], data_revision=revision, arm="real+synthetic",
        **{k: p[k] for k in SYNTHESIS_PARAMETERS})
    # Arm (f): real tail lesions pasted on head backgrounds and re-noised/denoised by the same synthesizer
    # (`generate --mode harmonize`), OOD-selected the same way; it competes with (e) on the same footing.
    harmonized = synthesize_and_retrain(
        data=data, splits=manifest, masks=lesion_masks.outputs["masks"], diffusion=diffusion.outputs["model"],
        feature_classifier=baseline.outputs["model"], data_revision=revision, arm="real+harmonized",
        **{k: p[k] for k in SYNTHESIS_PARAMETERS if k != "generate_mode"}, generate_mode="harmonize")

    ev_base = evaluate(model=baseline.outputs["model"], data=data, splits=manifest, arm="real-only",
                       split_name=p["eval_split"], bootstrap=p["eval_bootstrap"]).set_display_name("evaluate-real-only")
    # The prior-shift control: real images only, drawn with the synthetic arm's per-class counts (with the additive
    # dose: the replay control, the same extra tail draws all real).
    control = on_gpu(train_classifier_augmented(
        data=data, splits=manifest, synthetic=synth.outputs["selected"], backbone=p["backbone"],
        pretrained=p["pretrained"], precision=p["precision"], loss=p["loss"],
        sampler=p["classifier_sampler"], epochs=p["epochs"], resolution=p["resolution"],
        batch_size=p["batch_size"], seed=seed, synthetic_ratio=p["synthetic_ratio"],
        synthetic_weight=p["synthetic_weight"], synthetic_dose=p["synthetic_dose"], prior_shift=True,
        data_revision=revision)).set_display_name("train-prior-shift-control")
    ev_ctrl = evaluate(model=control.outputs["model"], data=data, splits=manifest, arm="prior-shift control",
                       split_name=p["eval_split"], bootstrap=p["eval_bootstrap"]).set_display_name("evaluate-control")
    table = compare_with_control(baseline=ev_base.outputs["evaluation"], control=ev_ctrl.outputs["evaluation"],
                                 augmented=synth.outputs["evaluation"], harmonized=harmonized.outputs["evaluation"],
                                 selected=synth.outputs["selected"], split_name=p["eval_split"],
                                 serve_evidence=p["serve_evidence"])
    # Serve the OOD-selected arm (e) only when the export rule says so (tailsynth.evaluation.promotion: it kept
    # synthetic images, and it is not worse on this split, or the profile's decisive experiment says it helps); (f) is
    # compared, not served, so that what is served does not depend on picking the best of several arms on one split.
    with dsl.If(table.outputs["Output"] >= 0.0, name="augmented-not-worse"):
        export(model=synth.outputs["model"], target=p["export_target"]).set_display_name("export-augmented")
    with dsl.Else(name="baseline-better"):
        export(model=baseline.outputs["model"], target=p["export_target"]).set_display_name("export-real-only")

    record = on_cpu_with_storage(version(synthetic=synth.outputs["selected"], data=data,
                                         candidates=synth.outputs["candidates"], diffusion=diffusion.outputs["model"],
                                         data_revision=revision, content_hash=checked.outputs["Output"],
                                         remote=p["dvc_remote"]))
    final = report(comparison=table.outputs["comparison"], baseline=ev_base.outputs["evaluation"],
                   control=ev_ctrl.outputs["evaluation"],
                   augmented=synth.outputs["evaluation"], harmonized=harmonized.outputs["evaluation"],
                   harmonized_selected=harmonized.outputs["selected"], candidates=synth.outputs["candidates"],
                   selected=synth.outputs["selected"], version_record=record.outputs["record"],
                   diffusion=diffusion.outputs["model"], serving=table.outputs["serving"], data_revision=revision,
                   profile=p["profile"])
    return final.outputs["report"]
