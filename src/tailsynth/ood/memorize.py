"""The memorization check: is a candidate a near-copy of a real training image?

A candidate is flagged when
- it is an exact pixel copy; or
- its resampling-robust descriptor (grey, box-filtered to 12 x 12, zero mean and unit norm, compared under all
  8 flips/90-degree rotations) is as close to a training image's as transformed copies of real training images
  are to their originals (the threshold is calibrated per call on such copies: other resize filters and sizes,
  flips, rotations, small colour gains and offsets); or
- its nearest training image is closer than almost every real validation image is to *its* nearest training
  image, in both feature space and pixel space.
Inpainting keeps the background image by design, so a candidate is never compared with its own background image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .scores import _l2n, pairwise_sq_dists

# Below half a grey level of RMS difference, two uint8 images are the same picture.
EXACT_RMS = 0.5 / 255.0


def pixel_vectors(images: np.ndarray) -> np.ndarray:
    """uint8 N x H x W x 3 -> float32 N x D in [0, 1]."""
    x = np.asarray(images)
    return x.reshape(len(x), -1).astype(np.float32) / 255.0


def _exclude(scores: np.ndarray, exclude: np.ndarray, value: float) -> None:
    """Set scores[i, j] = value for every ref row j >= 0 in exclude[i] (one index per query, or a row of them
    padded with -1: all images of the query's own background lesion)."""
    ex = exclude.reshape(len(exclude), -1)
    r, c = np.nonzero(ex >= 0)
    scores[r, ex[r, c]] = value


def nn_distance(query: np.ndarray, ref: np.ndarray, exclude: np.ndarray | None = None,
                rms: bool = False, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of each query row's nearest `ref` row; `exclude[i]` (>= 0, or a row of such indices padded
    with -1) are ref rows that query i may not match. With rms=True the distance is divided by sqrt(D) (per-pixel
    RMS difference)."""
    n = len(query)
    dist = np.full(n, np.inf)
    idx = np.full(n, -1, dtype=np.int64)
    if len(ref) == 0 or n == 0:
        return dist, idx
    for i in range(0, n, chunk):
        d2 = pairwise_sq_dists(query[i : i + chunk], ref)
        if exclude is not None:
            _exclude(d2, exclude[i : i + chunk], np.inf)
        j = np.argmin(d2, axis=1)
        dist[i : i + chunk] = np.sqrt(d2[np.arange(len(j)), j])
        idx[i : i + chunk] = j
    if rms:
        dist = dist / np.sqrt(query.shape[1])
    return dist, idx


DESC_SIDE = 12
_RESIZE_FILTERS = ("NEAREST", "BILINEAR", "BICUBIC", "LANCZOS", "BOX", "HAMMING")


def _as_images(pixels: np.ndarray) -> np.ndarray:
    """float N x (S*S*3) in [0, 1] (pixel_vectors) -> float N x S x S x 3."""
    n, d = pixels.shape
    side = int(round(np.sqrt(d / 3)))
    if side * side * 3 != d:
        raise ValueError(f"pixel vectors of length {d} are not square RGB images")
    return pixels.reshape(n, side, side, 3)


def descriptors(pixels: np.ndarray) -> np.ndarray:
    """N x DESC_SIDE^2 unit vectors: grey, box-filtered (any resize filter averages out), zero mean (colour
    offsets drop out), unit norm (colour gains drop out)."""
    from PIL import Image

    imgs = _as_images(pixels)
    grey = imgs @ np.array([0.299, 0.587, 0.114], np.float32)
    out = np.empty((len(grey), DESC_SIDE * DESC_SIDE), np.float32)
    for i, g in enumerate(grey):
        small = Image.fromarray(np.ascontiguousarray(g, dtype=np.float32), "F").resize((DESC_SIDE, DESC_SIDE), Image.BOX)
        out[i] = np.asarray(small, np.float32).reshape(-1)
    out -= out.mean(1, keepdims=True)
    out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-6
    return out


def _dihedral(desc: np.ndarray) -> np.ndarray:
    """N x D -> N x 8 x D: the descriptor under every flip / 90-degree rotation."""
    sq = desc.reshape(len(desc), DESC_SIDE, DESC_SIDE)
    views = []
    for flip in (False, True):
        base = sq[:, :, ::-1] if flip else sq
        for k in range(4):
            views.append(np.rot90(base, k, axes=(1, 2)).reshape(len(desc), -1))
    return np.stack(views, 1)


def descriptor_nn(query: np.ndarray, ref: np.ndarray, exclude: np.ndarray | None = None,
                  chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of each query descriptor's nearest ref descriptor over all 8 dihedral views; unit vectors,
    so the distance is sqrt(2 - 2 cos) in [0, 2]."""
    n = len(query)
    dist = np.full(n, np.inf)
    idx = np.full(n, -1, dtype=np.int64)
    if len(ref) == 0 or n == 0:
        return dist, idx
    views = _dihedral(query)
    for i in range(0, n, chunk):
        cos = np.einsum("nvd,md->nvm", views[i : i + chunk], ref).max(1)
        if exclude is not None:
            _exclude(cos, exclude[i : i + chunk], -np.inf)
        j = np.argmax(cos, axis=1)
        best = cos[np.arange(len(j)), j]
        dist[i : i + chunk] = np.sqrt(np.clip(2 - 2 * best, 0, None))
        idx[i : i + chunk] = j
    return dist, idx


def transformed_copies(pixels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Near-copies of real images as a generator or a careless pipeline makes them: resized to another size with
    a random filter and back, flipped or rotated by 90 degrees, with small per-channel colour gains and offsets."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    imgs = _as_images(pixels)
    side = imgs.shape[1]
    out = np.empty_like(imgs)
    for i, im in enumerate(imgs):
        u8 = Image.fromarray(np.clip(im * 255 + 0.5, 0, 255).astype(np.uint8))
        # Down to half the side: tiny synthesizers emit 16 px images that are read back at 28-32 px.
        to = int(rng.integers(max(8, side // 2), side * 2 + 1))
        f1, f2 = (getattr(Image.Resampling, _RESIZE_FILTERS[k]) for k in rng.integers(0, len(_RESIZE_FILTERS), 2))
        x = np.asarray(u8.resize((to, to), f1).resize((side, side), f2), np.float32) / 255.0
        x = np.rot90(x[:, ::-1] if rng.random() < 0.5 else x, int(rng.integers(0, 4)))
        x = x * rng.uniform(0.92, 1.08, 3) + rng.uniform(-0.04, 0.04, 3)
        out[i] = np.clip(x, 0, 1)
    return out.reshape(len(imgs), -1)


def copy_threshold(train_pixels: np.ndarray, n: int = 256, quantile: float = 0.99, seed: int = 0) -> float:
    """Descriptor distance below which a candidate counts as a near-copy: the `quantile` of transformed copies'
    distances to their own originals, capped below the nearest *other* training image of those originals
    (the 1% quantile), so that genuinely different real images stay apart."""
    if len(train_pixels) == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(train_pixels), min(n, len(train_pixels)), replace=False)
    orig = descriptors(train_pixels[rows])
    copies = descriptors(transformed_copies(train_pixels[rows], seed))
    d_copy = np.sqrt(np.clip(2 - 2 * np.einsum("nvd,nd->nv", _dihedral(copies), orig).max(1), 0, None))
    hi = float(np.quantile(d_copy, quantile))
    if len(train_pixels) > 1:
        d_other, _ = descriptor_nn(orig, descriptors(train_pixels), exclude=rows)
        d_other = d_other[np.isfinite(d_other)]
        # Same-lesion duplicates sit below any sensible cap; a cap under the copies' median would blind the check.
        cap = max(float(np.quantile(d_other, 0.01)), float(np.median(d_copy))) if len(d_other) else hi
        hi = min(hi, cap)
    return hi


@dataclass
class MemorizationResult:
    memorized: np.ndarray  # bool per candidate
    exact_copy: np.ndarray  # bool per candidate
    feat_nn: np.ndarray  # distance to the nearest training image, L2-normalised features
    pixel_nn: np.ndarray  # RMS pixel difference to the nearest training image, 0..1
    pixel_nn_index: np.ndarray  # that training image's row
    feat_threshold: float
    pixel_threshold: float
    near_copy: np.ndarray | None = None  # bool per candidate: resampling-robust descriptor match
    copy_nn: np.ndarray | None = None  # descriptor distance to the nearest training image (any flip/rotation)
    copy_nn_index: np.ndarray | None = None
    copy_threshold: float = 0.0


def thresholds_from_real(val_feats, val_pixels, train_feats, train_pixels, quantile: float = 0.01) -> tuple[float, float]:
    """The `quantile` of real validation images' nearest-training-image distances, per space."""
    if not 0.0 <= quantile <= 1.0:
        raise ConfigError(f"memorization quantile {quantile} must lie in [0, 1]")
    fd, _ = nn_distance(_l2n(val_feats), _l2n(train_feats))
    pd, _ = nn_distance(val_pixels, train_pixels, rms=True)
    return float(np.quantile(fd, quantile)), float(np.quantile(pd, quantile))


def check_memorization(cand_feats, cand_pixels, train_feats, train_pixels, feat_threshold: float,
                       pixel_threshold: float, exclude: np.ndarray | None = None,
                       copy_dist_threshold: float | None = None) -> MemorizationResult:
    """`copy_dist_threshold` None: calibrated here on transformed copies of the training images."""
    fd, _ = nn_distance(_l2n(cand_feats), _l2n(train_feats), exclude)
    pd, pidx = nn_distance(cand_pixels, train_pixels, exclude, rms=True)
    exact = pd <= EXACT_RMS
    if copy_dist_threshold is None:
        copy_dist_threshold = copy_threshold(train_pixels)
    cd, cidx = descriptor_nn(descriptors(cand_pixels), descriptors(train_pixels), exclude)
    near = cd <= copy_dist_threshold
    memorized = exact | near | ((fd <= feat_threshold) & (pd <= pixel_threshold))
    return MemorizationResult(memorized, exact, fd, pd, pidx, feat_threshold, pixel_threshold, near, cd, cidx,
                              float(copy_dist_threshold))
