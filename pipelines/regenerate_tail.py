"""regenerate_tail: given drifting tail classes and the current models, synthesise new candidates for exactly
those classes, select, retrain, evaluate against the current classifier, and export only if balanced
accuracy does not fall (gated with dsl.If). Triggered by the monitor when a tail class drifts.

Models come in by URI (dsl.importer): the diffusion model, the real-only classifier (the OOD feature
space) and the classifier now in service (the bar to clear).
"""

from typing import List

from kfp import dsl

from components import compare, evaluate, export, masks, split, validate, version

from .cluster import on_cpu_with_storage
from .profiles import DEFAULTS, SYNTHESIS_PARAMETERS, pipeline_parameters
from .synthesize import synthesize_and_retrain

NAME = "tailsynth-regenerate-tail"


# The profile parameters minus those of diffusion training (the model comes in by URI) and the ones set here.
SHARED = [k for k in DEFAULTS if not k.startswith("diffusion_") and k not in ("classes", "seed")]


@dsl.pipeline(name=NAME, description="Regenerate synthetic data for drifting tail classes; export only if not worse.")
@pipeline_parameters(required={"source": str, "data_revision": str, "classes": List[str], "diffusion_model_uri": str,
                               "feature_classifier_uri": str, "current_model_uri": str},
                     extra={"seed": (int, 1), "mask_size": (int, DEFAULTS["diffusion_resolution"])}, shared=SHARED)
def regenerate_tail(**p):
    diffusion = dsl.importer(artifact_uri=p["diffusion_model_uri"], artifact_class=dsl.Model, reimport=False)
    feature_model = dsl.importer(artifact_uri=p["feature_classifier_uri"], artifact_class=dsl.Model,
                                 reimport=False).set_display_name("import-feature-classifier")
    current = dsl.importer(artifact_uri=p["current_model_uri"], artifact_class=dsl.Model,
                           reimport=False).set_display_name("import-current-classifier")

    revision = p["data_revision"]
    checked = validate(source=p["source"], data_revision=revision, max_per_class=p["max_per_class"], seed=0)
    data = checked.outputs["data"]
    manifest = split(data=data, seed=0, val_fraction=p["val_fraction"],
                     test_fraction=p["test_fraction"], train_fraction=p["train_fraction"]).outputs["splits"]
    lesion_masks = masks(data=data, size=p["mask_size"])
    synth = synthesize_and_retrain(
        data=data, splits=manifest, masks=lesion_masks.outputs["masks"], diffusion=diffusion.output,
        feature_classifier=feature_model.output, data_revision=revision, arm="regenerated",
        **{k: p[k] for k in SYNTHESIS_PARAMETERS})
    ev_cur = evaluate(model=current.output, data=data, splits=manifest, arm="current", split_name=p["eval_split"],
                      bootstrap=p["eval_bootstrap"]).set_display_name("evaluate-current")
    table = compare(baseline=ev_cur.outputs["evaluation"], augmented=synth.outputs["evaluation"],
                    selected=synth.outputs["selected"])
    with dsl.If(table.outputs["Output"] >= 0.0, name="balanced-accuracy-not-lower"):
        export(model=synth.outputs["model"], target=p["export_target"])
        on_cpu_with_storage(version(synthetic=synth.outputs["selected"], data=data,
                                    candidates=synth.outputs["candidates"], diffusion=diffusion.output,
                                    data_revision=revision, content_hash=checked.outputs["Output"],
                                    remote=p["dvc_remote"]))
