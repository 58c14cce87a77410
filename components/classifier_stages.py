"""Classifier stages: train (real-only and augmented), evaluate, compare arms, export."""

# No `from __future__ import annotations`: KFP reads the real annotation objects.
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from .base import cpu_component, gpu_component


@gpu_component
def train_classifier(data: Input[Dataset], splits: Input[Dataset], backbone: str, pretrained: str, precision: str,
                     loss: str, sampler: str, epochs: int, resolution: int, batch_size: int, seed: int,
                     data_revision: str, model: Output[Model], metrics: Output[Metrics]) -> float:
    """The real-only classifier: the baseline arm and the OOD feature extractor. Returns val balanced accuracy."""
    from tailsynth.pipeline_io import train_arm

    return train_arm(data.path, splits.path, model, metrics, arm="real-only", data_revision=data_revision,
                     backbone=backbone, pretrained=pretrained or None, precision=precision or None, loss=loss,
                     sampler=sampler, epochs=epochs, seed=seed, resolution=resolution, batch_size=batch_size)


@gpu_component
def train_classifier_augmented(data: Input[Dataset], splits: Input[Dataset], synthetic: Input[Dataset],
                               backbone: str, pretrained: str, precision: str, loss: str, sampler: str,
                               epochs: int, resolution: int,
                               batch_size: int, seed: int, synthetic_ratio: float, synthetic_weight: float,
                               synthetic_dose: str, prior_shift: bool,
                               data_revision: str, model: Output[Model], metrics: Output[Metrics]) -> float:
    """Real + selected synthetic images, same backbone, sampler and budget as the baseline; or, with `prior_shift`,
    the control: the same per-class draws with every draw a real image (the replacing dose: real images oversampled
    to the synthetic arm's class counts; the additive one: the replay control), which separates "new images" from
    "more draws of the class". `synthetic_weight` scales the synthetic images' loss. Returns val balanced accuracy."""
    from tailsynth.pipeline_io import augmented_dose, synthetic_manifest, train_arm

    return train_arm(data.path, splits.path, model, metrics,
                     arm="prior-shift control" if prior_shift else "real+synthetic", data_revision=data_revision,
                     backbone=backbone, pretrained=pretrained or None, precision=precision or None, loss=loss,
                     sampler=sampler, epochs=epochs, seed=seed, resolution=resolution,
                     batch_size=batch_size, synthetic_manifest=str(synthetic_manifest(synthetic.path)),
                     synthetic_weight=synthetic_weight,
                     **augmented_dose(synthetic_ratio, synthetic_dose, prior_shift))


@cpu_component
def evaluate(model: Input[Model], data: Input[Dataset], splits: Input[Dataset], arm: str, split_name: str,
             bootstrap: int, evaluation: Output[Dataset], metrics: Output[Metrics]) -> float:
    """Per-class metrics of one arm on the held-out split. Returns balanced accuracy."""
    from tailsynth.classify.evaluate import evaluate_model
    from tailsynth.classify.folders import Evaluation
    from tailsynth.data.source import source_in
    from tailsynth.pipeline_io import numeric_items

    result = evaluate_model(model.path, str(source_in(data.path)), split_name, evaluation.path, splits=splits.path,
                            bootstrap=bootstrap)
    Evaluation(evaluation.path).write(result, arm, split_name)
    for k, v in numeric_items(result).items():
        metrics.log_metric(k, v)
    evaluation.metadata["arm"] = arm
    return float(result["balanced_accuracy"])


@cpu_component
def compare(baseline: Input[Dataset], augmented: Input[Dataset], selected: Input[Dataset], comparison: Output[Dataset],
            metrics: Output[Metrics]) -> float:
    """One row per arm (method, balanced_accuracy, recall per class). Returns augmented minus baseline BA, or
    NO_SYNTHETIC_MARGIN when the augmented arm's selection kept no image (nothing was regenerated: the synthesizer
    gate or the floor stopped every class), so that no model without new synthetic data is exported as regenerated."""
    from tailsynth.evaluation.promotion import NO_SYNTHETIC_MARGIN
    from tailsynth.ood.selection import Selection
    from tailsynth.pipeline_report import comparison_rows, write_comparison_csv

    rows = comparison_rows([baseline.path, augmented.path])
    write_comparison_csv(rows, comparison.path)
    delta = float(rows[1]["balanced_accuracy"] - rows[0]["balanced_accuracy"])
    for r in rows:
        metrics.log_metric(f"{r['method']}.balanced_accuracy", float(r["balanced_accuracy"]))
    metrics.log_metric("balanced_accuracy_delta", delta)
    if not Selection(selected.path).record()["overall"]["n_kept"]:
        metrics.log_metric("synthetic_images_kept", 0.0)
        return NO_SYNTHETIC_MARGIN
    return delta


@cpu_component
def compare_with_control(baseline: Input[Dataset], control: Input[Dataset], augmented: Input[Dataset],
                         harmonized: Input[Dataset], selected: Input[Dataset], split_name: str, serve_evidence: str,
                         comparison: Output[Dataset], serving: Output[Dataset], metrics: Output[Metrics]) -> float:
    """Rows real-only, prior-shift control, real+synthetic (e), real+harmonized (f), and which arm is served and why
    (tailsynth.evaluation.promotion; `serve_evidence`: the decisive experiment's results, "" = this split). Returns
    the serving margin the export rule tests (>= 0: serve (e))."""
    from tailsynth.evaluation.promotion import decide_serving
    from tailsynth.ood.selection import Selection
    from tailsynth.pipeline_report import comparison_rows, write_comparison_csv, write_serving

    rows = comparison_rows([baseline.path, control.path, augmented.path, harmonized.path])
    write_comparison_csv(rows, comparison.path)
    for r in rows:
        metrics.log_metric(f"{r['method']}.balanced_accuracy", float(r["balanced_accuracy"]))
    base, ctrl = rows[0]["balanced_accuracy"], rows[1]["balanced_accuracy"]
    for r in rows[2:]:
        metrics.log_metric(f"{r['method']}.balanced_accuracy_delta", float(r["balanced_accuracy"] - base))
        metrics.log_metric(f"{r['method']}.balanced_accuracy_delta_vs_control", float(r["balanced_accuracy"] - ctrl))
    decision = decide_serving(kept=int(Selection(selected.path).record()["overall"]["n_kept"]),
                              delta=float(rows[2]["balanced_accuracy"] - base), split=split_name,
                              evidence=serve_evidence)
    write_serving(decision, serving.path)
    metrics.log_metric("serving_margin", float(decision["margin"]))
    return float(decision["margin"])


@cpu_component
def export(model: Input[Model], target: str, exported: Output[Model]):
    """The serving form of the classifier: ONNX plus a Triton repository (target 'cluster': onnxruntime_onnx; 'local': python backend)."""
    from tailsynth.export import export_model

    info = export_model(model.path, exported.path, target=target)
    if isinstance(info, dict):
        exported.metadata.update({k: v for k, v in info.items() if isinstance(v, (str, int, float, bool))})
    exported.metadata["target"] = target
