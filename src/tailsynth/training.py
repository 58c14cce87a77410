"""Trainer parts shared by the classifier and the diffusion trainers, as timm splits its training script:
the optimizer, the one learning-rate schedule (linear warm-up, cosine decay to a floor) and the checkpoint saver.
torch is imported inside the functions, so importing this module stays light."""

from __future__ import annotations

import math
from pathlib import Path

from .errors import ConfigError

OPTIMIZERS = ("adamw", "sgd")


def create_optimizer(model, name: str, lr: float, weight_decay: float, momentum: float = 0.9,
                     decay_norm_and_bias: bool = False):
    """AdamW or SGD (Nesterov) over MODEL's parameters. Without DECAY_NORM_AND_BIAS, 1-d parameters (norms,
    biases) get no weight decay, as timm's param_groups_weight_decay does."""
    import torch

    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; choose {' or '.join(OPTIMIZERS)}")
    if decay_norm_and_bias:
        groups = [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    else:
        decay, no_decay = [], []
        for p in model.parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """The learning-rate factor at STEP (0-based): linear from 1/WARMUP to 1 over WARMUP steps, then a cosine from
    1 to MIN_RATIO at TOTAL, flat after."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def create_scheduler(optimizer, total_steps: int, warmup_steps: int, min_ratio: float):
    """A per-step LambdaLR following `warmup_cosine` (call .step() after every optimizer step)."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total_steps, warmup_steps, min_ratio))


class CheckpointSaver:
    """One resumable training state at PATH, written atomically (a crash mid-write leaves the previous one)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def save(self, state: dict) -> Path:
        import torch

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.path)
        return self.path

    def load(self, map_location="cpu") -> dict | None:
        """The saved state, or None when there is none yet."""
        import torch

        if not self.path.is_file():
            return None
        return torch.load(self.path, map_location=map_location, weights_only=False)
