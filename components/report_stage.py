"""The final report of a train_augment run."""

# No `from __future__ import annotations`: KFP reads the real annotation objects.
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from .base import cpu_component


@cpu_component
def report(comparison: Input[Dataset], baseline: Input[Dataset], control: Input[Dataset], augmented: Input[Dataset],
           harmonized: Input[Dataset], harmonized_selected: Input[Dataset], candidates: Input[Dataset],
           selected: Input[Dataset], version_record: Input[Artifact], diffusion: Input[Model], serving: Input[Dataset],
           data_revision: str, profile: str, report: Output[Artifact]):
    """report.md + report.html + the arms table (`pipeline_report.COMPARISON_FILE`) + plots and sample grids, in one
    folder."""
    from tailsynth.pipeline_report import build_run_report

    # Rows: real-only, the prior-shift control, then the two synthetic arms (OOD-selected inpainted, harmonized).
    build_run_report(out=report.path, comparison_csv=comparison.path,
                     evaluations=[baseline.path, control.path, augmented.path, harmonized.path], synthetic_arms=2,
                     extra_selected={"Harmonized tail samples (kept after OOD selection)": harmonized_selected.path},
                     candidates=candidates.path, selected=selected.path, version_record=version_record.path,
                     data_revision=data_revision, profile=profile, diffusion_model=diffusion.path,
                     serving=serving.path)
