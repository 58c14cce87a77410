"""Out-of-distribution scores for synthetic candidates, in the feature space of a real-data classifier.

Convention: every score here is "higher = further from the real data of the intended class", except
`p_intended` (the classifier's probability of the intended class, higher = better). Selection code
turns p_intended into an OOD score with `1 - p`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

OOD_SCORES = ("mahalanobis", "energy", "knn", "p_intended", "rel_mahalanobis")


@dataclass
class ClassGaussians:
    """Class means with one shared (shrunk) covariance, as in Lee et al. 2018's Mahalanobis detector."""

    means: np.ndarray  # C x D
    precision: np.ndarray  # D x D, inverse of the shared covariance
    shrinkage: float  # the Ledoit-Wolf coefficient actually used (0 = empirical covariance)
    present: np.ndarray  # C bools: classes with at least one real sample


def fit_class_gaussians(features: np.ndarray, labels: np.ndarray, n_classes: int,
                        shrinkage: str | float = "ledoit-wolf") -> ClassGaussians:
    """Class means and a shared covariance of the class-centred features.

    A 512-d covariance from a few thousand images (and a tail class of 80) is ill-conditioned; shrinkage
    towards a scaled identity keeps its inverse meaningful. `shrinkage` is "ledoit-wolf" (data-driven) or a
    fixed coefficient in [0, 1].
    """
    from sklearn.covariance import LedoitWolf, ShrunkCovariance

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or len(x) != len(y):
        raise ConfigError(f"features {x.shape} and labels {y.shape} do not match")
    if len(x) < 2:
        raise ConfigError("need at least two real samples to fit class Gaussians")
    d = x.shape[1]
    means = np.zeros((n_classes, d))
    present = np.zeros(n_classes, bool)
    centred = np.empty_like(x)
    for c in range(n_classes):
        m = y == c
        if m.any():
            present[c] = True
            means[c] = x[m].mean(0)
            centred[m] = x[m] - means[c]
    if isinstance(shrinkage, str):
        if shrinkage != "ledoit-wolf":
            raise ConfigError(f"shrinkage {shrinkage!r}: expected 'ledoit-wolf' or a number in [0, 1]")
        est = LedoitWolf(assume_centered=True).fit(centred)
        coef = float(est.shrinkage_)
    else:
        coef = float(shrinkage)
        if not 0.0 <= coef <= 1.0:
            raise ConfigError(f"shrinkage {coef}: must lie in [0, 1]")
        est = ShrunkCovariance(shrinkage=coef, assume_centered=True).fit(centred)
    # pinvh: the shrunk covariance is symmetric; pinv guards the zero-shrinkage, rank-deficient case.
    from scipy.linalg import pinvh

    precision = pinvh(est.covariance_)
    return ClassGaussians(means=means, precision=precision, shrinkage=coef, present=present)


def mahalanobis(features: np.ndarray, target: np.ndarray, g: ClassGaussians) -> np.ndarray:
    """Mahalanobis distance of each sample to the Gaussian of its *intended* class."""
    x = np.asarray(features, dtype=np.float64)
    t = np.asarray(target, dtype=np.int64)
    missing = sorted({int(c) for c in t if not g.present[c]})
    if missing:
        raise ConfigError(f"no real samples of class index(es) {missing} to score against")
    diff = x - g.means[t]
    sq = np.einsum("nd,de,ne->n", diff, g.precision, diff)
    return np.sqrt(np.clip(sq, 0.0, None))


def relative_mahalanobis(features: np.ndarray, target: np.ndarray, g: ClassGaussians) -> np.ndarray:
    """Distance to the intended class's Gaussian minus the distance to the nearest other class's: negative when a
    sample lies nearer its own class. Unlike the plain distance it does not reward samples that sit in the shared
    middle of the feature space, which with one shared covariance is nearer every class at once."""
    x = np.asarray(features, dtype=np.float64)
    t = np.asarray(target, dtype=np.int64)
    own = mahalanobis(x, t, g)
    nearest_other = np.full(len(x), np.inf)
    for c in np.flatnonzero(g.present):
        d = mahalanobis(x, np.full(len(x), c), g)
        nearest_other = np.where(t == c, nearest_other, np.minimum(nearest_other, d))
    return own - nearest_other


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Energy score E(x) = -T logsumexp(logits / T) (Liu et al. 2020); in-distribution inputs have low energy."""
    from scipy.special import logsumexp

    z = np.asarray(logits, dtype=np.float64) / temperature
    return -temperature * logsumexp(z, axis=1)


def _l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pairwise_sq_dists(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Squared Euclidean distances, computed in chunks (float64, clipped at 0 against round-off)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    bb = (b * b).sum(1)
    out = np.empty((len(a), len(b)))
    for i in range(0, len(a), chunk):
        aa = a[i : i + chunk]
        out[i : i + chunk] = np.clip((aa * aa).sum(1)[:, None] + bb[None, :] - 2.0 * aa @ b.T, 0.0, None)
    return out


def kth_nn_distance(query: np.ndarray, ref: np.ndarray, k: int, exclude_self: bool = False) -> np.ndarray:
    """Distance from each query row to its k-th nearest row of `ref` (k >= 1)."""
    if len(ref) == 0:
        raise ConfigError("empty reference set for k-NN distance")
    d2 = pairwise_sq_dists(query, ref)
    if exclude_self:
        np.fill_diagonal(d2, np.inf)
        avail = len(ref) - 1
    else:
        avail = len(ref)
    kk = min(k, avail)
    if kk < 1:
        raise ConfigError("k-NN distance needs at least one reference sample besides the query")
    return np.sqrt(np.partition(d2, kk - 1, axis=1)[:, kk - 1])


def knn_score(features: np.ndarray, target: np.ndarray, real_features: np.ndarray, real_labels: np.ndarray,
              k: int = 5) -> np.ndarray:
    """k-th nearest-neighbour distance to the real samples of the intended class, on L2-normalised
    features (Sun et al. 2022). When a class has fewer than k real samples, its last one is used."""
    x, r = _l2n(features), _l2n(real_features)
    t = np.asarray(target, dtype=np.int64)
    rl = np.asarray(real_labels, dtype=np.int64)
    out = np.empty(len(x))
    for c in np.unique(t):
        m = t == c
        ref = r[rl == c]
        if len(ref) == 0:
            raise ConfigError(f"no real samples of class index {int(c)} for the k-NN score")
        out[m] = kth_nn_distance(x[m], ref, k)
    return out


def p_intended(probs: np.ndarray, target: np.ndarray) -> np.ndarray:
    return np.asarray(probs, dtype=np.float64)[np.arange(len(target)), np.asarray(target, dtype=np.int64)]


@dataclass
class RealReference:
    """What scoring needs from the real data: training features/labels (the reference distribution)."""

    features: np.ndarray
    labels: np.ndarray
    n_classes: int
    gaussians: ClassGaussians
    knn_k: int = 5

    @classmethod
    def fit(cls, features, labels, n_classes: int, knn_k: int = 5, shrinkage="ledoit-wolf") -> RealReference:
        return cls(np.asarray(features), np.asarray(labels), n_classes,
                   fit_class_gaussians(features, labels, n_classes, shrinkage), knn_k)


def score_all(features: np.ndarray, logits: np.ndarray, probs: np.ndarray, target: np.ndarray,
              ref: RealReference) -> dict[str, np.ndarray]:
    """All four scores for samples meant to be of class `target` (indices into the classifier's classes)."""
    return {
        "mahalanobis": mahalanobis(features, target, ref.gaussians),
        "energy": energy(logits),
        "knn": knn_score(features, target, ref.features, ref.labels, ref.knn_k),
        "p_intended": p_intended(probs, target),
        "rel_mahalanobis": relative_mahalanobis(features, target, ref.gaussians),
    }


def as_ood(name: str, values: np.ndarray) -> np.ndarray:
    """The score oriented so that higher = more out-of-distribution."""
    if name not in OOD_SCORES:
        raise ConfigError(f"unknown score {name!r}; choose one of {', '.join(OOD_SCORES)}")
    v = np.asarray(values, dtype=np.float64)
    return 1.0 - v if name == "p_intended" else v
