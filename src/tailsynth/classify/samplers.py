"""Which training images an epoch sees: plain shuffling, class-balanced or square-root re-sampling,
and the mix of real and synthetic images.

Everything draws from one torch.Generator, so an epoch's order is reproducible from its saved state (resume).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError

CLASS_SAMPLERS = ("none", "class-balanced", "sqrt")
DOSES = ("replace", "add", "replay")


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
        raise ConfigError(f"unknown sampler {mode!r}; choose one of {', '.join(CLASS_SAMPLERS)}")
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


def allocate(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to `weights` that sum to `total` (largest remainder; ties to the lower index)."""
    w = np.asarray(weights, dtype=np.float64)
    if total <= 0 or w.sum() <= 0:
        return np.zeros(len(w), np.int64)
    exact = total * w / w.sum()
    out = np.floor(exact).astype(np.int64)
    rest = total - int(out.sum())
    order = np.argsort(-(exact - out), kind="stable")
    out[order[:rest]] += 1
    return out


def cycle(members: np.ndarray, k: int, gen: torch.Generator) -> torch.Tensor:
    """k draws from `members`, each repeated as evenly as possible: whole shuffled passes, then part of one more."""
    members = torch.as_tensor(np.asarray(members, dtype=np.int64))
    n = len(members)
    if k <= 0 or n == 0:
        return torch.zeros(0, dtype=torch.long)
    parts = [members[torch.randperm(n, generator=gen)] for _ in range(k // n)]
    parts.append(members[torch.randperm(n, generator=gen)[: k % n]])
    return torch.cat(parts)


class EpochPlan:
    """Real images (indices 0..n_real-1) and synthetic ones (n_real..) in one training set.

    Without synthetic images an epoch is the sampler's draw over the real images (a permutation for `none`,
    draws with replacement for the re-samplers), as it always was.

    With synthetic images the epoch is planned per class, with exact counts:
    - the class totals D_c come from the sampler applied to the pooled counts n_c = real_c + syn_c
      (`none`: D_c = n_c; `class-balanced`: equal shares of sum(n); `sqrt`: shares ∝ sqrt(n_c));
    - `synthetic_ratio` r is the share of each class's draws that are synthetic, for every class that has
      synthetic images (None: the pooled share syn_c / n_c, i.e. every image once under `none`);
    - draws within a class cycle through its images as evenly as possible.
    r = 0 with a synthetic set is the prior-shift control: the same class totals as the synthetic arm, every
    draw a real image (real images oversampled to the synthetic arm's counts).

    `dose` says how synthetic draws relate to the real ones:
    - `replace` (the above): synthetic draws take a share of the class totals, displacing real draws;
    - `add`: the real draws are exactly those of a real-only run with the same sampler, and each class with
      synthetic images gets r/(1-r) times its real draws on top (so r is still the synthetic share of the class's
      draws), i.e. synthesis only adds;
    - `replay`: the control of `add`: the same class totals, the extra draws being more real images of the class.
    """

    def __init__(self, labels_real: np.ndarray, labels_syn: np.ndarray, num_classes: int, mode: str = "none",
                 synthetic_ratio: float | None = None, dose: str = "replace"):
        if mode not in CLASS_SAMPLERS:
            raise ConfigError(f"unknown sampler {mode!r}; choose one of {', '.join(CLASS_SAMPLERS)}")
        if synthetic_ratio is not None and not 0.0 <= synthetic_ratio <= 1.0:
            raise ConfigError(f"synthetic_ratio is the share of a class's draws that are synthetic: it must lie in "
                             f"[0, 1], got {synthetic_ratio}")
        if dose not in DOSES:
            raise ConfigError(f"unknown synthetic dose {dose!r}; choose one of {', '.join(DOSES)}")
        if dose != "replace" and (synthetic_ratio is None or synthetic_ratio >= 1.0):
            raise ConfigError(f"dose {dose!r} needs a synthetic_ratio in [0, 1) (the synthetic share of a tail "
                              f"class's draws), got {synthetic_ratio}")
        self.real = np.asarray(labels_real, dtype=np.int64)
        self.syn = np.asarray(labels_syn, dtype=np.int64)
        self.C, self.mode, self.ratio, self.dose = num_classes, mode, synthetic_ratio, dose
        if len(self.syn):
            self.real_draws, self.syn_draws = self._plan() if dose == "replace" else self._plan_additive()

    def _sampler_totals(self, counts: np.ndarray) -> np.ndarray:
        total = int(counts.sum())
        if self.mode == "none":
            return counts.astype(np.int64)
        if self.mode == "class-balanced":
            return allocate(total, (counts > 0).astype(np.float64))
        return allocate(total, np.sqrt(counts))

    def _plan_additive(self) -> tuple[np.ndarray, np.ndarray]:
        real_c = np.bincount(self.real, minlength=self.C)
        syn_c = np.bincount(self.syn, minlength=self.C)
        real_draws = self._sampler_totals(real_c)
        extra = np.where(syn_c > 0, np.round(real_draws * self.ratio / (1.0 - self.ratio)), 0).astype(np.int64)
        if self.dose == "replay":
            return real_draws + extra, np.zeros(self.C, np.int64)
        return real_draws, extra

    def _plan(self) -> tuple[np.ndarray, np.ndarray]:
        real_c = np.bincount(self.real, minlength=self.C)
        syn_c = np.bincount(self.syn, minlength=self.C)
        pooled = real_c + syn_c
        present = pooled > 0
        totals = self._sampler_totals(pooled)
        if self.ratio is None:
            share = np.divide(syn_c, pooled, out=np.zeros(self.C), where=present)
        else:
            share = np.where(syn_c > 0, self.ratio, 0.0)
        share = np.where(real_c == 0, np.where(syn_c > 0, 1.0, 0.0), share)  # nothing real to draw
        syn_draws = np.round(share * totals).astype(np.int64)
        syn_draws = np.where(syn_c == 0, 0, syn_draws)
        return totals - syn_draws, syn_draws

    @property
    def n_syn_draws(self) -> int:
        return int(self.syn_draws.sum()) if len(self.syn) else 0

    def __len__(self) -> int:
        if not len(self.syn):
            return len(self.real)
        return int(self.real_draws.sum() + self.syn_draws.sum())

    def class_counts(self) -> np.ndarray:
        """Per-class counts of one epoch: the class prior the long-tail losses correct for."""
        if not len(self.syn):
            return expected_class_counts(self.real, self.C, self.mode, len(self.real))
        return (self.real_draws + self.syn_draws).astype(np.float64)

    def indices(self, gen: torch.Generator) -> torch.Tensor:
        if not len(self.syn):
            return draw(self.real, self.C, self.mode, len(self.real), gen)
        parts = []
        for c in range(self.C):
            parts.append(cycle(np.flatnonzero(self.real == c), int(self.real_draws[c]), gen))
            parts.append(cycle(np.flatnonzero(self.syn == c) + len(self.real), int(self.syn_draws[c]), gen))
        idx = torch.cat(parts)
        return idx[torch.randperm(len(idx), generator=gen)]
