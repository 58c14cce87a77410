"""Handcrafted augmentation on whole batches of tensors (no per-image PIL work).

One affine warp per image does random-resized-crop, rotation (any multiple of 90° plus a small angle:
dermoscopy has no canonical orientation) and flips; then brightness/contrast/saturation/hue jitter.
All randomness comes from the caller's generator, so a resumed run replays the same augmentations.
CMO (`CMOPaste`) pastes real tail lesions onto head-class backgrounds, before the handcrafted augmentation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.classes import TAIL_CLASSES
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


# ---- CMO: real tail lesions pasted onto head-class backgrounds (Park et al., CVPR 2022) --------------------------


@dataclass
class CMOConfig:
    """Context-rich minority oversampling with lesion masks instead of CutMix boxes.

    Each training image of a background (head) class is, with probability `prob`, overlaid with the lesion of a
    real tail-class image, cut out by its lesion mask (`tailsynth.masks`); the label is mixed by area: the pasted
    lesion's class gets the mask's share of the image, the background's class the rest. Foreground images are
    drawn with weight n_c^-power per image (Park et al.'s minority-weighted sampler; power 1: each tail class
    equally often). Backgrounds come from the batch the ordinary sampler drew, as in the paper.
    """

    enabled: bool = False
    prob: float = 0.5
    power: float = 1.0
    tail_classes: tuple[str, ...] = TAIL_CLASSES
    mask_dir: str | None = None  # masks written by `tailsynth masks`; computed here for images without one
    rot90: bool = True  # paste the lesion (with its mask) turned by a random multiple of 90° and flipped

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tail_classes"] = list(self.tail_classes)
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> CMOConfig:
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"cmo: unknown option(s) {sorted(unknown)}")
        if "tail_classes" in d:
            d["tail_classes"] = tuple(d["tail_classes"])
        d.setdefault("enabled", True)
        cfg = cls(**d)
        if not 0.0 <= cfg.prob <= 1.0:
            raise ConfigError(f"cmo: prob must lie in [0, 1], got {cfg.prob}")
        return cfg


class CMOPaste:
    """The per-batch transform: (float images N x 3 x H x W in 0..1, labels, which rows may be backgrounds)
    -> (images, second labels, lam), where lam is the weight of the first (background) label."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, masks: np.ndarray, classes: list[str],
                 cfg: CMOConfig):
        tail = [classes.index(c) for c in cfg.tail_classes if c in classes]
        if not tail:
            raise ConfigError(f"cmo: none of the tail classes {list(cfg.tail_classes)} is among {classes}")
        labels = np.asarray(labels, dtype=np.int64)
        fg = np.flatnonzero(np.isin(labels, tail) & (masks.reshape(len(masks), -1).sum(1) > 0))
        if len(fg) == 0:
            raise ConfigError(f"cmo: no training images of the tail classes {list(cfg.tail_classes)} with a lesion mask")
        counts = np.bincount(labels[fg], minlength=len(classes)).astype(np.float64)
        w = counts[labels[fg]] ** -cfg.power
        self.fg_images = torch.from_numpy(images[fg]).permute(0, 3, 1, 2).float().div_(255.0)
        self.fg_masks = torch.from_numpy(masks[fg].astype(np.float32))[:, None]
        self.fg_labels = torch.from_numpy(labels[fg])
        self.fg_p = torch.from_numpy(w / w.sum())
        self.is_tail = torch.zeros(len(classes), dtype=torch.bool)
        self.is_tail[tail] = True
        self.cfg = cfg

    def __call__(self, x: torch.Tensor, y: torch.Tensor, eligible: torch.Tensor, gen: torch.Generator):
        n = len(y)
        lam = torch.ones(n)
        y_b = y.clone()
        chosen = eligible & ~self.is_tail[y] & (torch.rand(n, generator=gen) < self.cfg.prob)
        rows = torch.nonzero(chosen).flatten()
        if len(rows) == 0:
            return x, y_b, lam
        j = torch.multinomial(self.fg_p, len(rows), replacement=True, generator=gen)
        fg, m = self.fg_images[j], self.fg_masks[j]
        if self.cfg.rot90:
            k = torch.randint(0, 4, (len(rows),), generator=gen)
            flip = torch.rand(len(rows), generator=gen) < 0.5
            for i in range(len(rows)):
                fg[i], m[i] = torch.rot90(fg[i], int(k[i]), (1, 2)), torch.rot90(m[i], int(k[i]), (1, 2))
                if flip[i]:
                    fg[i], m[i] = fg[i].flip(2), m[i].flip(2)
        x = x.clone()
        x[rows] = x[rows] * (1 - m) + fg * m
        lam[rows] = 1.0 - m.mean((1, 2, 3))
        y_b[rows] = self.fg_labels[j]
        return x, y_b, lam


def build_cmo(cfg: dict | None, dataset, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> CMOPaste | None:
    """The CMO transform for the real training images (None when not enabled); masks from `tailsynth.masks`."""
    c = CMOConfig.from_dict(cfg) if cfg else CMOConfig()
    if not c.enabled:
        return None
    from ..masks import masks_for_records

    tail = np.isin(labels, [classes.index(t) for t in c.tail_classes if t in classes])
    masks = np.zeros(images.shape[:3], dtype=bool)
    rows = np.flatnonzero(tail)
    if len(rows):  # only the foreground images need masks
        recs = [dataset.records[i] for i in rows]
        masks[rows], _ = masks_for_records(dataset, recs, images.shape[1], mask_dir=c.mask_dir, images=images[rows])
    return CMOPaste(images, labels, masks, classes, c)
