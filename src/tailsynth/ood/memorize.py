"""The memorization check: is a candidate a near-copy of a real training image?

A candidate is flagged when its nearest training image is closer than almost every real validation image
is to *its* nearest training image, in both feature space and pixel space (two independent views make a
false alarm less likely), or when it is an exact pixel copy. Inpainting keeps the background image by
design, so a candidate is never compared with its own background image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .scores import _l2n, pairwise_sq_dists

# Below half a grey level of RMS difference, two uint8 images are the same picture.
EXACT_RMS = 0.5 / 255.0


def pixel_vectors(images: np.ndarray) -> np.ndarray:
    """uint8 N x H x W x 3 -> float32 N x D in [0, 1]."""
    x = np.asarray(images)
    return x.reshape(len(x), -1).astype(np.float32) / 255.0


def nn_distance(query: np.ndarray, ref: np.ndarray, exclude: np.ndarray | None = None,
                rms: bool = False, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of each query row's nearest `ref` row; `exclude[i]` (>= 0) is a ref index that
    query i may not match. With rms=True the distance is divided by sqrt(D) (per-pixel RMS difference)."""
    n = len(query)
    dist = np.full(n, np.inf)
    idx = np.full(n, -1, dtype=np.int64)
    if len(ref) == 0 or n == 0:
        return dist, idx
    for i in range(0, n, chunk):
        d2 = pairwise_sq_dists(query[i : i + chunk], ref)
        if exclude is not None:
            ex = exclude[i : i + chunk]
            rows = np.flatnonzero(ex >= 0)
            d2[rows, ex[rows]] = np.inf
        j = np.argmin(d2, axis=1)
        dist[i : i + chunk] = np.sqrt(d2[np.arange(len(j)), j])
        idx[i : i + chunk] = j
    if rms:
        dist = dist / np.sqrt(query.shape[1])
    return dist, idx


@dataclass
class MemorizationResult:
    memorized: np.ndarray  # bool per candidate
    exact_copy: np.ndarray  # bool per candidate
    feat_nn: np.ndarray  # distance to the nearest training image, L2-normalised features
    pixel_nn: np.ndarray  # RMS pixel difference to the nearest training image, 0..1
    pixel_nn_index: np.ndarray  # that training image's row
    feat_threshold: float
    pixel_threshold: float


def thresholds_from_real(val_feats, val_pixels, train_feats, train_pixels, quantile: float = 0.01) -> tuple[float, float]:
    """The `quantile` of real validation images' nearest-training-image distances, per space."""
    if not 0.0 <= quantile <= 1.0:
        raise ConfigError(f"memorization quantile {quantile} must lie in [0, 1]")
    fd, _ = nn_distance(_l2n(val_feats), _l2n(train_feats))
    pd, _ = nn_distance(val_pixels, train_pixels, rms=True)
    return float(np.quantile(fd, quantile)), float(np.quantile(pd, quantile))


def check_memorization(cand_feats, cand_pixels, train_feats, train_pixels, feat_threshold: float,
                       pixel_threshold: float, exclude: np.ndarray | None = None) -> MemorizationResult:
    fd, _ = nn_distance(_l2n(cand_feats), _l2n(train_feats), exclude)
    pd, pidx = nn_distance(cand_pixels, train_pixels, exclude, rms=True)
    exact = pd <= EXACT_RMS
    memorized = exact | ((fd <= feat_threshold) & (pd <= pixel_threshold))
    return MemorizationResult(memorized, exact, fd, pd, pidx, feat_threshold, pixel_threshold)
