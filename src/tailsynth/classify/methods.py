"""The real-only long-tail methods the experiments compare: a loss, a sampler and any more training options, or a
post-hoc adjustment of another method's model."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Method:
    name: str
    loss: str = "ce"
    sampler: str = "none"
    posthoc_tau: float | None = None  # re-score the model of `base` with post-hoc logit adjustment
    base: str | None = None
    note: str = ""
    train_kw: dict = field(default_factory=dict, hash=False, compare=False)  # more ClassifierTrainConfig fields


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("ce", note="cross-entropy"),
    Method("weighted-ce", loss="weighted-ce", note="CE weighted by inverse class frequency"),
    Method("cb-ce", loss="cb-ce", note="CE weighted by effective number (β=0.9999)"),
    Method("focal", loss="focal", note="focal loss γ=2"),
    Method("ldam-drw", loss="ldam-drw", note="LDAM margins, re-weighting from 80% of epochs"),
    Method("logit-adjusted", loss="logit-adjusted", note="logit-adjusted loss τ=1"),
    Method("balanced-softmax", loss="balanced-softmax", note="balanced softmax (≡ logit-adjusted τ=1)"),
    Method("class-balanced-sampler", sampler="class-balanced", note="CE + class-balanced re-sampling"),
    Method("sqrt-sampler", sampler="sqrt", note="CE + square-root re-sampling"),
    Method("ce+posthoc", posthoc_tau=1.0, base="ce", note="CE model, post-hoc logit adjustment τ=1"),
    Method("ce-drw", loss="ce-drw", note="CE, effective-number re-weighting from 80% of epochs (DRW)"),
    Method("ce+crt", train_kw={"crt_epochs": 10},
           note="CE, then the last layer re-fitted on class-balanced real features (cRT, 10 epochs)"),
    Method("balanced-softmax+crt", loss="balanced-softmax", train_kw={"crt_epochs": 10},
           note="balanced softmax (instance sampling), then cRT"),
    Method("ce+mixup", train_kw={"mixup_alpha": 0.2}, note="CE + mixup α=0.2"),
    Method("balanced-softmax+mixup", loss="balanced-softmax", train_kw={"mixup_alpha": 0.2},
           note="balanced softmax (instance sampling) + mixup α=0.2"),
    Method("class-balanced-sampler+mixup", sampler="class-balanced", train_kw={"mixup_alpha": 0.2},
           note="CE + class-balanced re-sampling + mixup α=0.2"),
]}
