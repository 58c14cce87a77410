"""The chain both pipelines share: generate (sharded) -> merge -> OOD select -> retrain -> evaluate, as one
KFP sub-pipeline. train_augment feeds it the diffusion model and baseline it has just trained; regenerate_tail
feeds it imported ones. Its profile parameters are `profiles.SYNTHESIS_PARAMETERS`."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Model

from components import evaluate, generate, merge, select, shard_plan, synth_gate, train_classifier_augmented

from .cluster import on_gpu
from .profiles import SYNTHESIS_PARAMETERS, pipeline_parameters

NAME = "tailsynth-synthesize-retrain"


class Synthesized(NamedTuple):
    candidates: Dataset
    selected: Dataset
    model: Model
    evaluation: Dataset


@dsl.pipeline(name=NAME, description="Tail candidates from the diffusion model, OOD-selected, a classifier retrained "
                                     "on real + selected images and evaluated.")
@pipeline_parameters(required={"data": Input[Dataset], "splits": Input[Dataset], "masks": Input[Dataset],
                               "diffusion": Input[Model], "feature_classifier": Input[Model], "data_revision": str,
                               "arm": str},
                     shared=SYNTHESIS_PARAMETERS, defaults=False)
def synthesize_and_retrain(**p) -> Synthesized:
    data, splits = p["data"], p["splits"]
    # A probe per class before generating at scale: a class the synthesizer cannot paint is not synthesized
    # (tailsynth.ood.synth_gate; the profile's synth_gate says warn, require or off).
    gate = on_gpu(synth_gate(
        model=p["diffusion"], data=data, splits=splits, masks=p["masks"], classifier=p["feature_classifier"],
        classes=p["classes"], mode=p["generate_mode"], strength=p["strength"], sampler=p["sampler"],
        sampler_steps=p["sampler_steps"], guidance=p["guidance"], seed=p["seed"], probe=p["gate_probe"],
        policy=p["synth_gate"], floor_quantile=p["floor_quantile"]))
    plan = shard_plan(num_shards=p["num_shards"])
    with dsl.ParallelFor(plan.output, name="generation-shards") as shard:
        shard_task = on_gpu(generate(
            model=p["diffusion"], data=data, splits=splits, masks=p["masks"], gate=gate.outputs["gate"],
            classes=p["classes"], policy=p["policy"],
            count=p["count"], oversample=p["oversample"], mode=p["generate_mode"], strength=p["strength"],
            sampler=p["sampler"], sampler_steps=p["sampler_steps"],
            guidance=p["guidance"], seed=p["seed"], shard=shard, num_shards=p["num_shards"]))
    candidates = merge(shards=dsl.Collected(shard_task.outputs["candidates"]))
    chosen = select(candidates=candidates.outputs["candidates"], data=data, splits=splits,
                    classifier=p["feature_classifier"], gate=gate.outputs["gate"], gamma=p["gamma"],
                    calibrate=p["calibrate"], score=p["ood_score"], floor_quantile=p["floor_quantile"],
                    clean_confidence=p["clean_confidence"])
    retrained = on_gpu(train_classifier_augmented(
        data=data, splits=splits, synthetic=chosen.outputs["selected"], backbone=p["backbone"],
        pretrained=p["pretrained"], precision=p["precision"], loss=p["loss"],
        sampler=p["classifier_sampler"], epochs=p["epochs"], resolution=p["resolution"], batch_size=p["batch_size"],
        seed=p["seed"], synthetic_ratio=p["synthetic_ratio"], synthetic_weight=p["synthetic_weight"],
        synthetic_dose=p["synthetic_dose"], prior_shift=False, data_revision=p["data_revision"]))
    ev = evaluate(model=retrained.outputs["model"], data=data, splits=splits, arm=p["arm"], split_name=p["eval_split"],
                  bootstrap=p["eval_bootstrap"]).set_display_name("evaluate-retrained")
    return Synthesized(candidates=candidates.outputs["candidates"], selected=chosen.outputs["selected"],
                       model=retrained.outputs["model"], evaluation=ev.outputs["evaluation"])
