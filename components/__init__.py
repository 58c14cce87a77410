"""KFP v2 components: one thin typed wrapper per pipeline stage over one tailsynth library function.

Each component body imports tailsynth inside the function (KFP ships only the function's source to
the stage image), turns artifact paths into library arguments, calls one function and records
KFP Metrics plus files. Images come from components/images.yaml (see components.images).
"""

from .classifier_stages import (
    compare,
    compare_with_control,
    evaluate,
    export,
    train_classifier,
    train_classifier_augmented,
)
from .control import shard_plan
from .data_stages import split, validate, version
from .report_stage import report
from .synthesis_stages import generate, masks, merge, select, synth_gate, train_diffusion

__all__ = [
    "validate", "split", "version",
    "train_classifier", "train_classifier_augmented", "evaluate", "compare", "compare_with_control", "export",
    "masks", "train_diffusion", "synth_gate", "generate", "merge", "select",
    "report", "shard_plan",
]

GPU_COMPONENTS = ("train_classifier", "train_classifier_augmented", "train_diffusion", "synth_gate", "generate")
