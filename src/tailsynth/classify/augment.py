"""Handcrafted augmentation on whole batches of tensors (no per-image PIL work).

One affine warp per image does random-resized-crop, rotation (any multiple of 90° plus a small angle:
dermoscopy has no canonical orientation) and flips; then brightness/contrast/saturation/hue jitter.
All randomness comes from the caller's generator, so a resumed run replays the same augmentations.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError


@dataclass
class AugmentConfig:
    enabled: bool = True
    flip: bool = True
    rot90: bool = True
    rotate_deg: float = 15.0
    crop_scale: tuple[float, float] = (0.75, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02  # fraction of a full hue turn

    def to_dict(self) -> dict:
        d = asdict(self)
        d["crop_scale"] = list(self.crop_scale)
        d["crop_ratio"] = list(self.crop_ratio)
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> AugmentConfig:
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"augmentation: unknown option(s) {sorted(unknown)}")
        for k in ("crop_scale", "crop_ratio"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


def _u(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (hi - lo) + lo


def geometric(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """x: float N x C x H x W. Random crop/rotation/flip through one sampling grid."""
    n = x.shape[0]
    area = _u(n, cfg.crop_scale[0], cfg.crop_scale[1], gen)
    logr = _u(n, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), gen)
    r = torch.exp(logr)
    w = torch.sqrt(area * r).clamp(max=1.0)  # half-extent of the crop in normalised coordinates
    h = torch.sqrt(area / r).clamp(max=1.0)
    tx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - w)
    ty = (torch.rand(n, generator=gen) * 2 - 1) * (1 - h)
    ang = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(cfg.rotate_deg)
    if cfg.rot90:
        ang = ang + torch.randint(0, 4, (n,), generator=gen).float() * (math.pi / 2)
    sx = torch.ones(n)
    sy = torch.ones(n)
    if cfg.flip:
        sx = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
        sy = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([
        torch.stack([w * sx * cos, -h * sy * sin, tx], 1),
        torch.stack([w * sx * sin, h * sy * cos, ty], 1),
    ], 1).to(x.dtype)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def colour(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """x: float N x 3 x H x W in 0..1."""
    n = x.shape[0]
    dev = x.device

    def factor(strength: float) -> torch.Tensor:
        return _u(n, 1 - strength, 1 + strength, gen).to(dev).view(n, 1, 1, 1)

    gray_w = torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)
    if cfg.brightness:
        x = x * factor(cfg.brightness)
    if cfg.contrast:
        m = (x * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        x = (x - m) * factor(cfg.contrast) + m
    if cfg.saturation:
        g = (x * gray_w).sum(1, keepdim=True)
        x = (x - g) * factor(cfg.saturation) + g
    if cfg.hue:
        # Rotate chroma in YIQ space: a hue shift without HSV round trips.
        a = (_u(n, -cfg.hue, cfg.hue, gen) * 2 * math.pi).to(dev)
        to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=dev)
        to_rgb = torch.linalg.inv(to_yiq)
        rot = torch.zeros(n, 3, 3, device=dev)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2] = torch.cos(a), -torch.sin(a)
        rot[:, 2, 1], rot[:, 2, 2] = torch.sin(a), torch.cos(a)
        mat = to_rgb @ rot @ to_yiq  # n x 3 x 3
        x = torch.einsum("nij,njhw->nihw", mat, x)
    return x.clamp_(0, 1)


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """float N x 3 x H x W in 0..1 -> augmented, same shape and range."""
    if not cfg.enabled:
        return x
    x = geometric(x, cfg, gen)
    return colour(x, cfg, gen)
