"""Synthesis stages: lesion masks, diffusion training, sharded generation, merge, OOD selection."""

# No `from __future__ import annotations`: KFP reads the real annotation objects.
from typing import List

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from .base import cpu_component, gpu_component


@cpu_component
def masks(data: Input[Dataset], size: int, masks: Output[Dataset], metrics: Output[Metrics]):
    """Lesion masks for every real image (the regions the diffusion model learns to inpaint)."""
    from tailsynth.data.source import source_in
    from tailsynth.masks import compute_masks
    from tailsynth.pipeline_io import numeric_items

    summary = compute_masks(str(source_in(data.path)), masks.path, size=size or None)
    for k, v in numeric_items(summary if isinstance(summary, dict) else {}).items():
        metrics.log_metric(k, v)


@gpu_component
def train_diffusion(data: Input[Dataset], splits: Input[Dataset], masks: Input[Dataset], model_size: str,
                    resolution: int, steps: int, batch_size: int, max_minutes: float, seed: int, pretrained: str,
                    pretrained_hash: str, finetune_minutes: float, model: Output[Model], metrics: Output[Metrics]):
    """The class-conditional inpainting diffusion model: the shipped synthesizer `pretrained` as is, or fine-tuned
    from it for `finetune_minutes`, or (pretrained empty) trained here on the train split (`max_minutes` caps time).
    `pretrained_hash` (when given) must be the weights' hash: it is what this task's cache key knows of them."""
    from tailsynth.data.source import source_in
    from tailsynth.diffusion.model import install_pretrained, model_hash
    from tailsynth.diffusion.train import train_diffusion as train
    from tailsynth.pipeline_io import numeric_items

    if pretrained and pretrained_hash and model_hash(pretrained) != pretrained_hash:
        raise ValueError(f"{pretrained}: weights hash {model_hash(pretrained)} differs from pretrained_hash "
                         f"{pretrained_hash} (the synthesizer changed after the hash was taken)")
    if pretrained and finetune_minutes <= 0:
        result = install_pretrained(pretrained, model.path)
    else:
        options = {"batch_size": batch_size} if batch_size > 0 else {}
        minutes = finetune_minutes if pretrained else max_minutes
        if minutes > 0:
            options["max_minutes"] = minutes
        result = train(data=str(source_in(data.path)), size=model_size, out=model.path, resolution=resolution or None,
                       steps=steps or None, seed=seed, mask_dir=masks.path, splits=splits.path,
                       init_from=pretrained or None, **options)
        result["model_hash"] = model_hash(model.path)
    for k, v in numeric_items(result if isinstance(result, dict) else {}).items():
        metrics.log_metric(k, v)
    model.metadata.update({"size": model_size, "resolution": resolution, "steps": steps,
                           "pretrained": pretrained, "model_hash": result["model_hash"]})


@gpu_component
def synth_gate(model: Input[Model], data: Input[Dataset], splits: Input[Dataset], masks: Input[Dataset],
               classifier: Input[Model], classes: List[str], mode: str, strength: float, sampler: str,
               sampler_steps: int, guidance: float, seed: int, probe: int, policy: str, floor_quantile: float,
               gate: Output[Dataset], metrics: Output[Metrics]):
    """The synthesizer gate: a probe of `probe` candidates per class, judged against real held-out images under the
    real-only classifier (tailsynth.ood.synth_gate). Generation then synthesizes only the classes that pass;
    policy `require` fails the run instead, `off` passes every class unprobed."""
    from tailsynth.classify.model import feature_model
    from tailsynth.data.classes import TAIL_CLASSES
    from tailsynth.data.source import source_in
    from tailsynth.ood.floor import Floor
    from tailsynth.ood.synth_gate import ProbeSettings, gate_lines, run_synth_gate
    from tailsynth.progress import notice

    rec = run_synth_gate(model.path, str(source_in(data.path)), splits.path, masks.path, feature_model(classifier.path),
                         list(classes) or list(TAIL_CLASSES), gate.path, policy=policy,
                         probe=ProbeSettings(mode=mode, strength=strength, sampler=sampler, steps=sampler_steps,
                                             guidance=guidance, seed=seed, count=probe),
                         floor=Floor(quantile=floor_quantile) if floor_quantile > 0 else None)
    for line in gate_lines(rec):
        notice(line)
    metrics.log_metric("classes_passing", float(len(rec["passing"])))
    metrics.log_metric("classes_failing", float(len(rec["failing"])))
    gate.metadata.update({"passing": rec["passing"], "failing": rec["failing"], "policy": policy, "mode": mode})


@gpu_component
def generate(model: Input[Model], data: Input[Dataset], splits: Input[Dataset], masks: Input[Dataset],
             gate: Input[Dataset], classes: List[str], policy: str, count: int, oversample: float, mode: str,
             strength: float, sampler: str, sampler_steps: int, guidance: float, seed: int, shard: int,
             num_shards: int, candidates: Output[Dataset], metrics: Output[Metrics]):
    """One shard (0-based index of `num_shards`) of tail-class candidates, of the classes that passed the
    synthesizer gate; the pipeline fans shards out. No class passed: an empty candidate set that says why."""
    from tailsynth.data.source import source_in
    from tailsynth.diffusion.candidate_set import write_empty_candidate_set
    from tailsynth.diffusion.generate import GenerateConfig
    from tailsynth.diffusion.generate import generate as gen
    from tailsynth.ood.synth_gate import read_gate
    from tailsynth.pipeline_io import numeric_items

    verdict = read_gate(gate.path)
    wanted = list(classes) or verdict["classes"]
    use = [c for c in wanted if verdict["policy"] == "off" or c in verdict["passing"]]
    if not use:
        write_empty_candidate_set(candidates.path, {"mode": mode, "shard": f"{shard + 1}/{num_shards}",
                                                    "stopped_by_gate": verdict["failing"]})
        result = {"n": 0}
    else:
        result = gen(GenerateConfig(model=str(model.path), data=str(source_in(data.path)), out=candidates.path,
                                    classes=use, policy=policy, count=count or None,
                                    oversample=oversample, mode=mode, strength=strength, sampler=sampler,
                                    steps=sampler_steps, guidance=guidance, seed=seed, shard=(shard + 1, num_shards),
                                    masks=masks.path, splits=splits.path))
    for k, v in numeric_items(result if isinstance(result, dict) else {}).items():
        metrics.log_metric(k, v)
    candidates.metadata.update({"shard": shard, "num_shards": num_shards, "sampler": sampler, "mode": mode,
                                "classes": use})


@cpu_component
def merge(shards: Input[List[Dataset]], candidates: Output[Dataset], metrics: Output[Metrics]):
    """All shards as one candidate set (provenance kept per image)."""
    from tailsynth.diffusion.generate import merge_shards
    from tailsynth.pipeline_io import numeric_items

    result = merge_shards([s.path for s in shards], candidates.path)
    metrics.log_metric("shards", float(len(shards)))
    for k, v in numeric_items(result if isinstance(result, dict) else {}).items():
        metrics.log_metric(k, v)


@cpu_component
def select(candidates: Input[Dataset], data: Input[Dataset], splits: Input[Dataset], classifier: Input[Model],
           gate: Input[Dataset], gamma: float, calibrate: float, score: str, floor_quantile: float,
           clean_confidence: float, selected: Output[Dataset], metrics: Output[Metrics]):
    """OOD post-selection in the real-only classifier's feature space, above the floor (`floor_quantile` > 0; 0 =
    no floor); writes the kept set and its statistics, with the synthesizer gate's verdict in its record.

    The rule: the cleaning rule when `clean_confidence` > 0 (ood.clean at that confidence; gamma is then not
    used), else exactly one of `gamma` (keep fraction per class) and `calibrate` (validation quantile) is > 0.
    """
    from tailsynth.classify.model import feature_model
    from tailsynth.data.source import source_in
    from tailsynth.diffusion.candidate_set import CandidateSet
    from tailsynth.ood.floor import Floor, shortfall_lines
    from tailsynth.ood.select import select_candidates, write_empty_selection
    from tailsynth.ood.synth_gate import read_gate
    from tailsynth.pipeline_io import localize_manifest, numeric_items, selection_rule
    from tailsynth.progress import notice

    verdict = read_gate(gate.path)
    listed = CandidateSet(candidates.path)
    if not listed.rows():
        if not verdict["failing"]:
            raise ValueError(f"{listed.manifest_path}: no candidates were generated (check the classes, policy and count)")
        result = write_empty_selection(selected.path, candidates.path, verdict)
    else:
        result = select_candidates(candidates.path, str(source_in(data.path)), feature_model(classifier.path),
                                   selected.path,
                                   **selection_rule(gamma, calibrate, clean_confidence), score=score, splits=splits.path,
                                   floor=Floor(quantile=floor_quantile) if floor_quantile > 0 else None, gate=verdict)
        for line in shortfall_lines(result["floor"]["per_class"], verdict.get("mode")):
            notice(line)
    localize_manifest(selected.path)  # the kept images travel with the selection, not by reference
    for k, v in numeric_items(result if isinstance(result, dict) else {}).items():
        metrics.log_metric(k, v)
