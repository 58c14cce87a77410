"""Quality of a synthetic set against real data, in a feature space of our choosing.

Inception-v3 weights (the usual FID/KID feature extractor) are not available offline here, so FD and KID
are computed in the penultimate feature space of the real-data classifier. Those numbers are comparable
with each other (same classifier), not with published FID values. `inception_fid` uses torchmetrics'
FID only when a local Inception checkpoint is given and torchmetrics is installed.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError, MissingInputError
from .scores import kth_nn_distance, pairwise_sq_dists


def _as2d(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ConfigError(f"{name}: expected a 2-d feature array, got shape {a.shape}")
    return a


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_from_stats(mu1, s1, mu2, s2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    Tr((S1 S2)^(1/2)) equals the sum of square roots of the eigenvalues of S1^(1/2) S2 S1^(1/2), which is
    symmetric PSD: eigvalsh on it avoids the complex round-off that scipy.linalg.sqrtm(S1 @ S2) produces for
    the singular covariances of small samples.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
    r = _psd_sqrt(s1)
    m = r @ s2 @ r
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2.0), 0.0, None)).sum())
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt, 0.0))


def frechet_distance(real, fake) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (unbiased covariance, ddof=1)."""
    a, b = _as2d(real, "real"), _as2d(fake, "fake")
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    return frechet_from_stats(a.mean(0), np.cov(a, rowvar=False, ddof=1), b.mean(0), np.cov(b, rowvar=False, ddof=1))


def _poly_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # The KID kernel of Binkowski et al. 2018: (x.y / d + 1)^3.
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def mmd2_unbiased(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel (diagonals of the within-set kernels left out)."""
    m, n = len(a), len(b)
    kxx, kyy, kxy = _poly_kernel(a, a), _poly_kernel(b, b), _poly_kernel(a, b)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def kid(real, fake, subset_size: int = 1000, n_subsets: int = 100, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (here in classifier features): mean and std of the unbiased MMD^2 over
    random subsets. When both sets fit in one subset, the single exact estimate is returned (std 0)."""
    a, b = _as2d(real, "real"), _as2d(fake, "fake")
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    size = min(subset_size, len(a), len(b))
    if size >= len(a) and size >= len(b):
        return mmd2_unbiased(a, b), 0.0
    rng = np.random.default_rng(seed)
    vals = [mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
            for _ in range(n_subsets)]
    return float(np.mean(vals)), float(np.std(vals))


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    Each sample's neighbourhood is a ball reaching its k-th nearest neighbour within its own set.
    Precision: share of fake samples inside at least one real ball. Recall: share of real samples inside
    at least one fake ball. k is capped at (set size - 1).
    """
    a, b = _as2d(real, "real"), _as2d(fake, "fake")
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    ra = kth_nn_distance(a, a, min(k, len(a) - 1), exclude_self=True)
    rb = kth_nn_distance(b, b, min(k, len(b) - 1), exclude_self=True)
    d = np.sqrt(pairwise_sq_dists(b, a))  # fake x real
    precision = float((d <= ra[None, :]).any(axis=1).mean())
    recall = float((d.T <= rb[None, :]).any(axis=1).mean())
    return precision, recall


def class_quality(real_feats, fake_feats, *, n_candidates: int, n_kept: int, n_memorized: int,
                  k: int = 3, kid_subset: int = 1000, kid_subsets: int = 100, seed: int = 0) -> dict:
    """The per-class entry of the selection's quality record (`selection.RECORD_FILE`); fake_feats are the *kept*
    candidates' features."""
    real_feats = np.asarray(real_feats)
    fake_feats = np.asarray(fake_feats)
    kid_mean, kid_std = kid(real_feats, fake_feats, kid_subset, kid_subsets, seed) if len(fake_feats) else (math.nan,) * 2
    prec, rec = precision_recall(real_feats, fake_feats, k) if len(fake_feats) else (math.nan,) * 2
    return {
        "n_candidates": int(n_candidates),
        "n_kept": int(n_kept),
        "acceptance_rate": (n_kept / n_candidates) if n_candidates else math.nan,
        "fd": frechet_distance(real_feats, fake_feats) if len(fake_feats) else math.nan,
        "kid": kid_mean,
        "kid_std": kid_std,
        "precision": prec,
        "recall": rec,
        "memorization_rate": (n_memorized / n_candidates) if n_candidates else math.nan,
        "n_memorized": int(n_memorized),
    }


def inception_fid(real_images: np.ndarray, fake_images: np.ndarray, checkpoint: str) -> float:
    """FID with torchmetrics' Inception feature extractor, loading weights from a *local* file.

    Optional: needs `torchmetrics` (and its `torch-fidelity` extra) and a FID Inception checkpoint on disk;
    the machines of this project reach no model hub, so no default is downloaded.
    """
    from pathlib import Path

    if not Path(checkpoint).is_file():
        raise MissingInputError(f"{checkpoint}: Inception checkpoint not found (FID in Inception space needs a local file)")
    try:
        import torch
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as e:  # optional dependency
        raise RuntimeError(f"Inception FID needs torchmetrics[image] installed ({e})") from e
    fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(checkpoint))
    for imgs, real in ((real_images, True), (fake_images, False)):
        for i in range(0, len(imgs), 64):
            x = torch.from_numpy(np.ascontiguousarray(imgs[i : i + 64])).permute(0, 3, 1, 2)
            fid.update(x, real=real)
    return float(fid.compute())
