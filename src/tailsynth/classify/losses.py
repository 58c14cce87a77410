"""Long-tail losses, each a named option built from the training class counts.

Every loss takes (logits N x C, target N, sample_weight N or None) and returns the (weighted) mean.
Per-sample weights carry the synthetic manifest's weights; they are normalised by their sum, so a batch of
all-ones weights gives exactly the unweighted mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

LOSSES = ("ce", "weighted-ce", "cb-ce", "focal", "ce-drw", "ldam-drw", "logit-adjusted", "balanced-softmax")


def inverse_frequency_weights(counts: Sequence[float]) -> torch.Tensor:
    """w_c ∝ 1/n_c, scaled so the weights sum to the number of classes."""
    n = torch.as_tensor(np.asarray(counts, dtype=np.float64)).clamp_min(1.0)
    w = 1.0 / n
    return (w * len(n) / w.sum()).float()


def effective_number_weights(counts: Sequence[float], beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights (Cui et al. 2019): w_c ∝ (1-β)/(1-β^n_c), summing to the number of classes."""
    n = torch.as_tensor(np.asarray(counts, dtype=np.float64)).clamp_min(1.0)
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n))
    return (w * len(n) / w.sum()).float()


class LongTailLoss(torch.nn.Module):
    """Base: class weights (may change per epoch, for DRW) and a logit transform at training time."""

    name = "ce"

    def __init__(self, counts: Sequence[float]):
        super().__init__()
        self.register_buffer("counts", torch.as_tensor(np.asarray(counts, dtype=np.float32)))
        self.class_weight: torch.Tensor | None = None

    def set_epoch(self, epoch: int) -> None:
        pass

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = None if self.class_weight is None else self.class_weight.to(logits.device)
        return F.cross_entropy(logits, target, weight=w, reduction="none")

    def forward(self, logits, target, sample_weight=None, target_b=None, lam=None):
        """Weighted mean loss. With `target_b` and `lam` (per sample), a mixed label: lam of `target`, 1 - lam of
        `target_b` (CMO/CutMix), i.e. lam * loss(target) + (1 - lam) * loss(target_b) per sample."""
        ps = self.per_sample(logits, target)  # already scaled by the class weight of each target
        if target_b is None and self.class_weight is None and sample_weight is None:
            return ps.mean()
        # Weighted mean, normalised by the summed weights (PyTorch's 'mean' convention for class weights).
        cw = None if self.class_weight is None else self.class_weight.to(ps.device, ps.dtype)
        denom = torch.ones_like(ps) if cw is None else cw[target]
        if target_b is not None:
            lam = torch.as_tensor(lam, device=ps.device, dtype=ps.dtype).expand_as(ps)
            ps = lam * ps + (1 - lam) * self.per_sample(logits, target_b)
            denom = lam * denom + (1 - lam) * (torch.ones_like(ps) if cw is None else cw[target_b])
        if sample_weight is not None:
            sw = sample_weight.to(ps.device, ps.dtype)
            ps, denom = ps * sw, denom * sw
        return ps.sum() / denom.sum().clamp_min(1e-12)


class CrossEntropy(LongTailLoss):
    name = "ce"


class WeightedCE(LongTailLoss):
    name = "weighted-ce"

    def __init__(self, counts):
        super().__init__(counts)
        self.class_weight = inverse_frequency_weights(counts)


class ClassBalancedCE(LongTailLoss):
    name = "cb-ce"

    def __init__(self, counts, beta: float = 0.9999):
        super().__init__(counts)
        self.class_weight = effective_number_weights(counts, beta)


class FocalLoss(LongTailLoss):
    """-(1-p_t)^γ log p_t (Lin et al. 2017), unweighted by class."""

    name = "focal"

    def __init__(self, counts, gamma: float = 2.0):
        super().__init__(counts)
        self.gamma = gamma

    def per_sample(self, logits, target):
        logp = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
        return -((1.0 - logp.exp()).clamp_min(0) ** self.gamma) * logp


class DeferredReweightCE(LongTailLoss):
    """CE with deferred re-weighting (Cao et al. 2019, DRW): plain CE on instance-sampled data first, so features are
    learnt from every image, then effective-number class weights from `drw_epoch` on, to re-balance the classifier."""

    name = "ce-drw"

    def __init__(self, counts, drw_epoch: int = 0, beta: float = 0.9999):
        super().__init__(counts)
        self.drw_epoch = int(drw_epoch)
        self._drw_weight = effective_number_weights(counts, beta)

    def set_epoch(self, epoch: int) -> None:
        self.class_weight = self._drw_weight if epoch >= self.drw_epoch else None


class LDAMDRW(DeferredReweightCE):
    """LDAM (Cao et al. 2019): subtract m_c = max_m * n_c^(-1/4) / max(n^(-1/4)) from the true-class logit, scale by s;
    deferred re-weighting switches to effective-number class weights from `drw_epoch` on.

    The paper pairs s=30 with a cosine classifier; the heads here are plain linear layers whose logits are
    already unnormalised, so s defaults to 1.
    """

    name = "ldam-drw"

    def __init__(self, counts, max_m: float = 0.5, s: float = 1.0, drw_epoch: int = 0, beta: float = 0.9999):
        super().__init__(counts, drw_epoch=drw_epoch, beta=beta)
        m = torch.as_tensor(np.asarray(counts, dtype=np.float64)).clamp_min(1.0) ** -0.25
        self.register_buffer("margins", (m * (max_m / m.max())).float())
        self.s = s

    def per_sample(self, logits, target):
        onehot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
        adjusted = logits - onehot * self.margins.to(logits.device, logits.dtype)
        w = None if self.class_weight is None else self.class_weight.to(logits.device)
        return F.cross_entropy(self.s * adjusted, target, weight=w, reduction="none")


class LogitAdjusted(LongTailLoss):
    """Logit-adjusted loss (Menon et al. 2021): CE on logits + τ log π_c."""

    name = "logit-adjusted"

    def __init__(self, counts, tau: float = 1.0):
        super().__init__(counts)
        prior = self.counts.double().clamp_min(1.0)
        self.register_buffer("offset", (tau * torch.log(prior / prior.sum())).float())

    def per_sample(self, logits, target):
        return F.cross_entropy(logits + self.offset.to(logits.device, logits.dtype), target, reduction="none")


class BalancedSoftmax(LogitAdjusted):
    """Balanced softmax (Ren et al. 2020): CE on logits + log n_c. Equal to the logit-adjusted loss with τ=1
    (log n_c and log π_c differ by a constant, which softmax ignores); kept as its own name for the comparison."""

    name = "balanced-softmax"

    def __init__(self, counts):
        super().__init__(counts, tau=1.0)
        self.offset = torch.log(self.counts.double().clamp_min(1.0)).float()


# The hyper-parameters each loss takes (loss_kw keys).
LOSS_OPTIONS = {"ce": (), "weighted-ce": (), "cb-ce": ("cb_beta",), "focal": ("focal_gamma",),
                "ce-drw": ("drw_epoch", "cb_beta"), "ldam-drw": ("ldam_max_m", "ldam_s", "drw_epoch", "cb_beta"), "logit-adjusted": ("la_tau",),
                "balanced-softmax": ()}


def build_loss(name: str, counts: Sequence[float], epochs: int | None = None, **kw) -> LongTailLoss:
    """A loss by name; `kw` holds its hyper-parameters (focal_gamma, cb_beta, ldam_max_m, ldam_s, drw_epoch, la_tau).
    A hyper-parameter the loss does not take is an error, not silently ignored."""
    if name in LOSS_OPTIONS:
        unknown = sorted(set(kw) - set(LOSS_OPTIONS[name]))
        if unknown:
            known = ", ".join(LOSS_OPTIONS[name]) or "none"
            raise ConfigError(f"loss {name!r}: unknown option(s) {', '.join(unknown)} (takes: {known})")
    if name == "ce":
        return CrossEntropy(counts)
    if name == "weighted-ce":
        return WeightedCE(counts)
    if name == "cb-ce":
        return ClassBalancedCE(counts, beta=kw.get("cb_beta", 0.9999))
    if name == "focal":
        return FocalLoss(counts, gamma=kw.get("focal_gamma", 2.0))
    drw = kw.get("drw_epoch")
    if drw is None:
        # The paper defers re-weighting to the last fifth of training (epoch 160 of 200).
        drw = int(round(0.8 * (epochs or 1)))
    if name == "ce-drw":
        return DeferredReweightCE(counts, drw_epoch=drw, beta=kw.get("cb_beta", 0.9999))
    if name == "ldam-drw":
        return LDAMDRW(counts, max_m=kw.get("ldam_max_m", 0.5), s=kw.get("ldam_s", 1.0), drw_epoch=drw,
                       beta=kw.get("cb_beta", 0.9999))
    if name == "logit-adjusted":
        return LogitAdjusted(counts, tau=kw.get("la_tau", 1.0))
    if name == "balanced-softmax":
        return BalancedSoftmax(counts)
    raise ConfigError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


def posthoc_adjust(logits: np.ndarray, counts: Sequence[float], tau: float) -> np.ndarray:
    """Post-hoc logit adjustment (Menon et al. 2021): logits - τ log π at prediction time."""
    prior = np.asarray(counts, dtype=np.float64).clip(min=1.0)
    return logits - tau * np.log(prior / prior.sum())[None, :]
