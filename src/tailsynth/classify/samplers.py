"""Which training images an epoch sees: plain shuffling, class-balanced or square-root re-sampling,
and the mix of real and synthetic images.

Everything draws from one torch.Generator, so an epoch's order is reproducible from its saved state (resume).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError

SAMPLERS = ("none", "class-balanced", "sqrt")


def sample_probabilities(labels: np.ndarray, num_classes: int, mode: str) -> np.ndarray:
    """Per-image draw probability: class-balanced gives each class the same share (∝ 1/n_c per image),
    sqrt gives class c a share ∝ sqrt(n_c) (∝ 1/sqrt(n_c) per image)."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    if mode == "class-balanced":
        w = 1.0 / counts[labels]
    elif mode == "sqrt":
        w = 1.0 / np.sqrt(counts[labels])
    elif mode == "none":
        w = np.ones(len(labels))
    else:
        raise ConfigError(f"unknown sampler {mode!r}; choose one of {', '.join(SAMPLERS)}")
    return w / w.sum()


def expected_class_counts(labels: np.ndarray, num_classes: int, mode: str, n_draws: int) -> np.ndarray:
    """How many images of each class an epoch of `n_draws` draws contains on average."""
    p = sample_probabilities(labels, num_classes, mode)
    return np.bincount(np.asarray(labels, dtype=np.int64), weights=p, minlength=num_classes) * n_draws


def draw(labels: np.ndarray, num_classes: int, mode: str, n_draws: int, gen: torch.Generator) -> torch.Tensor:
    """Indices into `labels` for one epoch: a permutation when mode is none and n_draws fits, else draws with replacement."""
    n = len(labels)
    if n == 0 or n_draws <= 0:
        return torch.zeros(0, dtype=torch.long)
    if mode == "none":
        if n_draws <= n:
            return torch.randperm(n, generator=gen)[:n_draws]
        reps = [torch.randperm(n, generator=gen) for _ in range(n_draws // n)]
        rest = torch.randperm(n, generator=gen)[: n_draws % n]
        return torch.cat([*reps, rest])
    p = torch.from_numpy(sample_probabilities(labels, num_classes, mode))
    return torch.multinomial(p, n_draws, replacement=True, generator=gen)


class EpochPlan:
    """Real images (indices 0..n_real-1) and synthetic ones (n_real..) in one pool.

    synthetic_ratio None: every real and synthetic image is one pool, re-sampled by `mode`.
    synthetic_ratio r: each epoch holds n_real real draws (by `mode`) plus round(r * n_real) synthetic draws
    (uniform over the synthetic set; without replacement while they last), shuffled together.
    """

    def __init__(self, labels_real: np.ndarray, labels_syn: np.ndarray, num_classes: int, mode: str = "none",
                 synthetic_ratio: float | None = None):
        if mode not in SAMPLERS:
            raise ConfigError(f"unknown sampler {mode!r}; choose one of {', '.join(SAMPLERS)}")
        if synthetic_ratio is not None and synthetic_ratio < 0:
            raise ConfigError(f"synthetic_ratio must be >= 0, got {synthetic_ratio}")
        self.real = np.asarray(labels_real, dtype=np.int64)
        self.syn = np.asarray(labels_syn, dtype=np.int64)
        self.C, self.mode, self.ratio = num_classes, mode, synthetic_ratio

    @property
    def n_syn_draws(self) -> int:
        if self.ratio is None or len(self.syn) == 0:
            return 0
        return int(round(self.ratio * len(self.real)))

    def __len__(self) -> int:
        if self.ratio is None:
            return len(self.real) + len(self.syn)
        return len(self.real) + self.n_syn_draws

    def class_counts(self) -> np.ndarray:
        """Expected per-class counts of one epoch: the class prior the long-tail losses correct for."""
        if self.ratio is None:
            both = np.concatenate([self.real, self.syn])
            return expected_class_counts(both, self.C, self.mode, len(both))
        real = expected_class_counts(self.real, self.C, self.mode, len(self.real))
        syn = np.zeros(self.C)
        if len(self.syn):
            syn = np.bincount(self.syn, minlength=self.C) / len(self.syn) * self.n_syn_draws
        return real + syn

    def indices(self, gen: torch.Generator) -> torch.Tensor:
        if self.ratio is None:
            both = np.concatenate([self.real, self.syn])
            return draw(both, self.C, self.mode, len(both), gen)
        r = draw(self.real, self.C, self.mode, len(self.real), gen)
        k = self.n_syn_draws
        s = draw(self.syn, self.C, "none", k, gen) + len(self.real) if k else torch.zeros(0, dtype=torch.long)
        idx = torch.cat([r, s])
        return idx[torch.randperm(len(idx), generator=gen)]
