"""The classifier that OOD scoring works in, as scoring sees it: classes, input size and a prediction function.

Selection comes before classification in the package order, so the classifier stage builds one of these from a
model folder (`tailsynth.classify.model.feature_model`) and the caller hands it in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# images (N x R x R x 3 uint8), batch size -> (class probabilities, penultimate features, logits)
Predict = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class FeatureModel:
    source: str  # where the classifier came from (recorded in the selection's quality record, followed by lineage)
    classes: list[str]
    resolution: int
    backbone: str
    predict: Predict
