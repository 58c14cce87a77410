"""The chain both pipelines share: generate (sharded) -> merge -> OOD select -> retrain -> evaluate, as one
KFP sub-pipeline. train_augment feeds it the diffusion model and baseline it has just trained; regenerate_tail
feeds it imported ones."""

from typing import List, NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Model

from components import evaluate, generate, merge, select, shard_plan, train_classifier_augmented

from .cluster import on_gpu

NAME = "tailsynth-synthesize-retrain"


class Synthesized(NamedTuple):
    candidates: Dataset
    selected: Dataset
    model: Model
    evaluation: Dataset


@dsl.pipeline(name=NAME, description="Tail candidates from the diffusion model, OOD-selected, a classifier retrained "
                                     "on real + selected images and evaluated.")
def synthesize_and_retrain(
    data: Input[Dataset],
    splits: Input[Dataset],
    masks: Input[Dataset],
    diffusion: Input[Model],
    feature_classifier: Input[Model],
    data_revision: str,
    arm: str,
    classes: List[str],
    policy: str,
    count: int,
    oversample: float,
    sampler: str,
    sampler_steps: int,
    guidance: float,
    num_shards: int,
    gamma: float,
    calibrate: float,
    ood_score: str,
    backbone: str,
    loss: str,
    epochs: int,
    resolution: int,
    batch_size: int,
    seed: int,
    synthetic_ratio: float,
    eval_split: str,
    eval_bootstrap: int,
) -> Synthesized:
    plan = shard_plan(num_shards=num_shards)
    with dsl.ParallelFor(plan.output, name="generation-shards") as shard:
        shard_task = on_gpu(generate(model=diffusion, data=data, splits=splits, masks=masks, classes=classes,
                                     policy=policy, count=count, oversample=oversample, sampler=sampler,
                                     sampler_steps=sampler_steps, guidance=guidance, seed=seed, shard=shard,
                                     num_shards=num_shards))
    candidates = merge(shards=dsl.Collected(shard_task.outputs["candidates"]))
    chosen = select(candidates=candidates.outputs["candidates"], data=data, splits=splits,
                    classifier=feature_classifier, gamma=gamma, calibrate=calibrate, score=ood_score)
    retrained = on_gpu(train_classifier_augmented(
        data=data, splits=splits, synthetic=chosen.outputs["selected"], backbone=backbone, loss=loss, epochs=epochs,
        resolution=resolution, batch_size=batch_size, seed=seed, synthetic_ratio=synthetic_ratio,
        data_revision=data_revision))
    ev = evaluate(model=retrained.outputs["model"], data=data, splits=splits, arm=arm, split_name=eval_split,
                  bootstrap=eval_bootstrap).set_display_name("evaluate-retrained")
    return Synthesized(candidates=candidates.outputs["candidates"], selected=chosen.outputs["selected"],
                       model=retrained.outputs["model"], evaluation=ev.outputs["evaluation"])
