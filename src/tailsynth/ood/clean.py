"""Cleaning candidates with a real-data classifier (DiffuLT-style), and how much the cleaned set improves on chance.

Three tests, each on the scorer's (real-only, cross-fitted: it never saw the candidate's reported fold) view:
- **confidently another class**: the classifier puts the candidate in another class with probability >= a
  threshold; such a lesion teaches the wrong label and is deleted;
- **AID band**: the candidate's distance to its intended class prototype (mean of the real training features of the
  class, in the L2-normalised penultimate space) lies in [lo * d_c, hi * d_c], where d_c is the mean distance of the
  class's real training images to that prototype. Closer than d_c adds little that the real images do not have;
  beyond hi * d_c it is off the class;
- memorized candidates (ood.memorize) are never kept.
`relative Mahalanobis` and `p_intended` are offered as rankings beside these (ood.scores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

DEFAULT_CONFIDENCE = 0.8
DEFAULT_BAND = (1.0, 2.0)


def _l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


@dataclass(frozen=True)
class Prototypes:
    centres: np.ndarray  # C x D, unit vectors (nan rows for classes without real images)
    spread: np.ndarray  # C: mean distance of the class's real images to its centre (d_c)

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, n_classes: int) -> Prototypes:
        f, y = _l2n(features), np.asarray(labels, dtype=np.int64)
        centres = np.full((n_classes, f.shape[1]), np.nan)
        spread = np.full(n_classes, np.nan)
        for c in range(n_classes):
            m = y == c
            if m.any():
                centres[c] = _l2n(f[m].mean(0, keepdims=True))[0]
                spread[c] = float(np.linalg.norm(f[m] - centres[c], axis=1).mean())
        return cls(centres, spread)

    def distance(self, features: np.ndarray, target: np.ndarray) -> np.ndarray:
        t = np.asarray(target, dtype=np.int64)
        return np.linalg.norm(_l2n(features) - self.centres[t], axis=1)


def confidently_other(probs: np.ndarray, target: np.ndarray, threshold: float) -> np.ndarray:
    """True where the top class is not the intended one and has probability >= threshold."""
    p = np.asarray(probs, dtype=np.float64)
    top = p.argmax(1)
    return (top != np.asarray(target)) & (p.max(1) >= threshold)


def clean_mask(features, probs, target, memorized, prototypes: Prototypes, *, confidence: float = DEFAULT_CONFIDENCE,
               band: tuple[float, float] = DEFAULT_BAND) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(kept, the reason masks: other_class, below_band, above_band, memorized)."""
    lo, hi = band
    if not 0.0 < confidence <= 1.0:
        raise ConfigError(f"cleaning confidence must lie in (0, 1], got {confidence}")
    if not 0.0 <= lo < hi:
        raise ConfigError(f"cleaning band must satisfy 0 <= lo < hi, got {band}")
    t = np.asarray(target, dtype=np.int64)
    d = prototypes.distance(features, t)
    dc = prototypes.spread[t]
    reasons = {"other_class": confidently_other(probs, t, confidence), "below_band": d < lo * dc,
               "above_band": d > hi * dc, "memorized": np.asarray(memorized, bool)}
    kept = ~np.any(np.stack(list(reasons.values())), axis=0)
    return kept, reasons


def label_fidelity(probs: np.ndarray, target: np.ndarray) -> float:
    """Share of candidates whose top-1 class is the intended one."""
    if not len(target):
        return math.nan
    return float((np.asarray(probs).argmax(1) == np.asarray(target)).mean())


def kept_vs_chance(real_features: dict, features, probs, target, kept, *, n_random: int = 20, seed: int = 0) -> dict:
    """Per-class label fidelity and FD of the kept set, of all candidates, and of random subsets of the kept size
    (mean and sd over `n_random` draws): a selection rule earns its place only by beating its random twin.
    `real_features`: class index -> real training features of the class (the FD reference)."""
    from .quality import frechet_distance

    rng = np.random.default_rng(seed)
    t = np.asarray(target, dtype=np.int64)
    out = {}
    for c in sorted(set(t.tolist())):
        m = np.flatnonzero(t == c)
        k = np.flatnonzero((t == c) & kept)
        entry = {"n_candidates": int(len(m)), "n_kept": int(len(k)),
                 "label_fidelity_kept": label_fidelity(probs[k], t[k]),
                 "label_fidelity_all": label_fidelity(probs[m], t[m])}
        fid_r, fd_r = [], []
        for _ in range(n_random if 0 < len(k) < len(m) else 0):
            r = rng.choice(m, len(k), replace=False)
            fid_r.append(label_fidelity(probs[r], t[r]))
            if len(k) >= 2 and real_features.get(c) is not None:
                fd_r.append(frechet_distance(real_features[c], features[r]))
        entry["label_fidelity_random"] = float(np.mean(fid_r)) if fid_r else entry["label_fidelity_all"]
        entry["label_fidelity_random_sd"] = float(np.std(fid_r)) if fid_r else 0.0
        if real_features.get(c) is not None:
            entry["fd_kept"] = frechet_distance(real_features[c], features[k]) if len(k) >= 2 else math.nan
            entry["fd_all"] = frechet_distance(real_features[c], features[m]) if len(m) >= 2 else math.nan
            entry["fd_random"] = float(np.mean(fd_r)) if fd_r else entry["fd_all"]
            entry["fd_random_sd"] = float(np.std(fd_r)) if fd_r else 0.0
        out[c] = entry
    return out
