"""Feature-space synthesis: new tail samples drawn in a trained classifier's penultimate feature space, and the
classifier's head re-fitted on real + synthetic features with the backbone frozen (arm (g) of the augmentation
experiment; docs/results/augmentation_experiment_ham.md, amendment of 2026-12-07).

Why features: a tail class with 50 real lesions gives a 64 px image generator little to learn from, but its
features under a trained backbone are compact enough for a class-conditional Gaussian; sampling it and re-fitting
the head moves the decision boundaries towards where the rare classes' unseen lesions lie, at a cost of seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

# A dermoscopic image has no orientation: the four flips are views of the same lesion, free extra features.
VIEWS = ("identity", "hflip", "vflip", "hvflip")
HEAD_ITERATIONS = 200


def flip_views(images: np.ndarray) -> np.ndarray:
    """N x H x W x C -> 4N images, view-major (all identities, then all horizontal flips, ...)."""
    return np.concatenate([images, images[:, :, ::-1], images[:, ::-1], images[:, ::-1, ::-1]])


@dataclass
class ClassGaussians:
    """Per class: the mean and the Ledoit-Wolf-shrunk covariance of its features (shrinkage keeps a 512-d
    covariance usable from a few hundred samples), and a sampler."""

    means: dict[int, np.ndarray]
    covariances: dict[int, np.ndarray]
    shrinkage: dict[int, float]

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, classes: list[int]) -> ClassGaussians:
        from sklearn.covariance import LedoitWolf

        means, covs, shrink = {}, {}, {}
        for c in classes:
            f = features[labels == c].astype(np.float64)
            if len(f) < 2:
                raise ConfigError(f"class index {c}: {len(f)} feature vector(s); a Gaussian needs at least 2")
            lw = LedoitWolf().fit(f)
            means[c], covs[c], shrink[c] = lw.location_, lw.covariance_, float(lw.shrinkage_)
        return cls(means, covs, shrink)

    def sample(self, counts: dict[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(features, labels) with counts[c] draws of class c, reproducible from SEED."""
        rng = np.random.default_rng(seed)
        feats, labels = [], []
        for c in sorted(counts):
            n = int(counts[c])
            if n <= 0:
                continue
            feats.append(rng.multivariate_normal(self.means[c], self.covariances[c], size=n, method="cholesky"))
            labels.append(np.full(n, c, np.int64))
        if not feats:
            dim = len(next(iter(self.means.values()))) if self.means else 0
            return np.zeros((0, dim), np.float32), np.zeros(0, np.int64)
        return np.concatenate(feats).astype(np.float32), np.concatenate(labels)


def synthetic_counts(labels: np.ndarray, classes: list[int], share: float) -> dict[int, int]:
    """Per class, ceil(n_real * r / (1 - r)) draws: equal per-sample weight gives the synthetic part share r."""
    if not 0.0 <= share < 1.0:
        raise ConfigError(f"synthetic share r={share}: must be in [0, 1)")
    return {c: math.ceil(int((labels == c).sum()) * share / (1.0 - share)) for c in classes}


def balanced_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-sample weights giving every present class the same total weight (what a class-balanced sampler does
    in expectation), normalised to mean 1."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = 1.0 / counts[present]
    out = w[labels]
    return out / out.mean()


def fit_head(features: np.ndarray, labels: np.ndarray, weights: np.ndarray, init_weight: np.ndarray,
             init_bias: np.ndarray, l2: float, iterations: int = HEAD_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """A linear head minimising the weighted cross-entropy + l2 * ||W||^2 by full-batch L-BFGS from (a)'s head.
    Deterministic (no sampling, no shuffling): the same inputs give the same head."""
    import torch

    x = torch.from_numpy(np.asarray(features, np.float32))
    y = torch.from_numpy(np.asarray(labels, np.int64))
    w = torch.from_numpy(np.asarray(weights, np.float32))
    weight = torch.tensor(init_weight, dtype=torch.float32, requires_grad=True)
    bias = torch.tensor(init_bias, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-10, history_size=20)

    def closure():
        opt.zero_grad()
        ce = torch.nn.functional.cross_entropy(x @ weight.T + bias, y, reduction="none")
        loss = (ce * w).sum() / w.sum() + l2 * (weight**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return weight.detach().numpy().copy(), bias.detach().numpy().copy()


def head_logits(features: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return features.astype(np.float64) @ weight.T.astype(np.float64) + bias.astype(np.float64)
