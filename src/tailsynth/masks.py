"""Lesion masks: a source's expert masks where it ships them (HAM10000), unsupervised ones elsewhere, and reading
user-supplied ISIC Task 1 masks.

The lesion is the region that differs most from the surrounding skin: the skin colour is estimated
from a border ring (lesions are centred in dermoscopy crops), each pixel scores its colour distance
from that skin plus how much darker it is, Otsu splits the smoothed score, morphology cleans it and
the largest connected component (preferring one that does not touch the border, which is usually
vignetting or hair) is kept. When that fails (flat image, empty or near-full result) a centred
ellipse is used instead and recorded as method `ellipse`, so downstream users can tell.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .data.errors import DataError
from .errors import ConfigError

MIN_COVERAGE = 0.01  # below this the "lesion" is noise
MAX_COVERAGE = 0.85  # above this the threshold split the skin, not the lesion
METHOD_OTSU = "otsu"
METHOD_FALLBACK = "ellipse"
METHOD_SUPPLIED = "supplied"
METHOD_EXPERT = "expert"  # the data set's own segmentation (HAM10000's released masks)


def ellipse_mask(size: int, frac: float = 0.3) -> np.ndarray:
    """A centred ellipse covering about `frac` of the image (as a circle here: dermoscopy crops are square)."""
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    r = size * np.sqrt(frac / np.pi)
    return ((yy - c) ** 2 + (xx - c) ** 2) <= r**2


def _score_map(img: np.ndarray) -> np.ndarray:
    x = img.astype(np.float32) / 255.0
    s = x.shape[0]
    ring = max(1, s // 10)
    border = np.concatenate(
        [x[:ring].reshape(-1, 3), x[-ring:].reshape(-1, 3), x[:, :ring].reshape(-1, 3), x[:, -ring:].reshape(-1, 3)]
    )
    skin = np.median(border, axis=0)
    lum = x @ np.array([0.299, 0.587, 0.114], np.float32)
    skin_lum = float(skin @ np.array([0.299, 0.587, 0.114], np.float32))
    dist = np.sqrt(((x - skin) ** 2).sum(-1))
    darker = np.clip(skin_lum - lum, 0, None)
    return dist + darker


def segment_lesion(img: np.ndarray) -> tuple[np.ndarray, str]:
    """(bool mask HxW, method) for one HxWx3 uint8 image."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    s = img.shape[0]
    score = ndi.gaussian_filter(_score_map(img), sigma=max(0.5, s / 64))
    if float(score.max() - score.min()) < 1e-3:
        return ellipse_mask(s), METHOD_FALLBACK
    mask = score > threshold_otsu(score)
    r = max(1, s // 64)
    st = ndi.generate_binary_structure(2, 1)
    mask = ndi.binary_opening(mask, structure=st, iterations=r)
    mask = ndi.binary_closing(mask, structure=st, iterations=r)
    mask = ndi.binary_fill_holes(mask)
    lab, n = ndi.label(mask)
    if n == 0:
        return ellipse_mask(s), METHOD_FALLBACK
    areas = ndi.sum(mask, lab, index=np.arange(1, n + 1))
    edge = np.zeros_like(mask)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    touching = set(np.unique(lab[edge & mask]).tolist()) - {0}
    inner = [i for i in range(1, n + 1) if i not in touching]
    # An inner component wins unless it is tiny next to a border-touching one (a lesion filling the crop).
    best_inner = max(inner, key=lambda i: areas[i - 1]) if inner else None
    best_all = int(np.argmax(areas)) + 1
    pick = best_all
    if best_inner is not None and areas[best_inner - 1] >= 0.25 * areas[best_all - 1]:
        pick = best_inner
    mask = lab == pick
    cov = float(mask.mean())
    if cov < MIN_COVERAGE or cov > MAX_COVERAGE:
        return ellipse_mask(s), METHOD_FALLBACK
    return mask, METHOD_OTSU


def segment_batch(images: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Masks (N,H,W bool) and methods for an N,H,W,3 uint8 array."""
    out = np.zeros(images.shape[:3], dtype=bool)
    methods = []
    for i, im in enumerate(images):
        out[i], m = segment_lesion(im)
        methods.append(m)
    return out, methods


def read_mask_file(path: str | Path, size: int | None = None, resample: str = "nearest") -> np.ndarray:
    """A mask PNG (255 = lesion, anything > 127 counts) as bool, optionally resized to size x size.

    `resample="bilinear"` resizes the grey values as the image is resized and thresholds afterwards, so the mask
    lies exactly on the resized image (HAM10000's masks are already soft at their edges)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("L")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR if resample == "bilinear" else Image.NEAREST)
            return np.asarray(im) > 127
    except FileNotFoundError:
        raise DataError(f"{path}: mask file missing") from None
    except Exception as e:
        raise DataError(f"{path}: cannot decode mask ({e})") from e


def find_mask_file(mask_dir: str | Path, image_id: str) -> Path | None:
    """`<id>.png` (written by compute_masks) or `<id>_segmentation.png` (ISIC 2018 Task 1 naming)."""
    d = Path(mask_dir)
    for name in (f"{image_id}.png", f"{image_id}_segmentation.png"):
        if (d / name).is_file():
            return d / name
    return None


def expert_mask_path(record) -> Path | None:
    """The data set's own mask file of `record`, when its source ships one and the file exists."""
    p = (record.meta or {}).get("mask_path")
    return Path(p) if p and Path(p).is_file() else None


def masks_for_records(ds, records: Sequence, size: int, mask_dir: str | Path | None = None,
                      images: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """Masks at `size` for `records`: from `mask_dir` when it holds one for the image, else the source's expert
    mask, else segmented here (Otsu, or the ellipse fallback)."""
    out = np.zeros((len(records), size, size), dtype=bool)
    methods: list[str] = []
    if mask_dir is not None and not Path(mask_dir).is_dir():
        raise DataError(f"{mask_dir}: mask folder not found")
    for i, r in enumerate(records):
        f = find_mask_file(mask_dir, r.image_id) if mask_dir is not None else None
        expert = expert_mask_path(r) if f is None else None
        if f is not None:
            out[i] = read_mask_file(f, size)
            methods.append(METHOD_SUPPLIED)
        elif expert is not None:
            out[i] = read_mask_file(expert, size, resample="bilinear")
            methods.append(METHOD_EXPERT)
        else:
            img = images[i] if images is not None else ds.image(r, size)
            out[i], m = segment_lesion(img)
            methods.append(m)
    return out, methods


def contact_sheet(images: np.ndarray, masks: np.ndarray, path: str | Path, cols: int = 8,
                  colour=(0, 255, 0)) -> Path:
    """A grid PNG of images with their mask outlines drawn in `colour`."""
    from PIL import Image
    from scipy import ndimage as ndi

    n = len(images)
    if n == 0:
        raise ConfigError("contact_sheet: no images")
    s = images.shape[1]
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    sheet = np.full((rows * (s + 2), cols * (s + 2), 3), 255, np.uint8)
    for k in range(n):
        im = images[k].copy()
        m = masks[k].astype(bool)
        outline = m & ~ndi.binary_erosion(m)
        im[outline] = colour
        y, x = divmod(k, cols)
        sheet[y * (s + 2) + 1 : y * (s + 2) + 1 + s, x * (s + 2) + 1 : x * (s + 2) + 1 + s] = im
    Image.fromarray(sheet).save(path)
    return Path(path)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _quantiles(values) -> dict:
    v = np.asarray(values, dtype=float)
    if not len(v):
        return {"n": 0}
    return {"n": int(len(v)), "mean": round(float(v.mean()), 4), "median": round(float(np.median(v)), 4),
            "p10": round(float(np.percentile(v, 10)), 4), "p90": round(float(np.percentile(v, 90)), 4)}


def compute_masks(source, out, size: int | None = None, limit: int | None = None,
                  sheet_count: int = 64) -> dict:
    """A mask for every image of SOURCE: the source's expert mask where it ships one, else segmented here.

    Writes `OUT/<image>.png` (255 = lesion), `OUT/masks.csv` (`image,coverage,method`; method says the mask's
    source: expert, otsu or ellipse), `OUT/contact_sheet.png` and `OUT/summary.json`; returns the summary. Where an
    expert mask exists the Otsu segmentation is computed too and their IoU summarised (`otsu_vs_expert_iou`): it
    measures how far the unsupervised masks used on sources without expert masks are from the truth."""
    from PIL import Image

    from .data import load_source

    ds = load_source(source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = ds.records[:limit] if limit else ds.records
    if not records:
        raise DataError(f"{source}: no images")
    rows, sheet_imgs, sheet_masks, ious = [], [], [], []
    methods: dict[str, int] = {}
    for r in records:
        img = ds.image(r, size)
        expert = expert_mask_path(r)
        otsu, method = segment_lesion(img)
        m = otsu
        if expert is not None:
            m = read_mask_file(expert, img.shape[0], resample="bilinear")
            method = METHOD_EXPERT
            ious.append(mask_iou(otsu, m))
        Image.fromarray((m * 255).astype(np.uint8)).save(out / f"{r.image_id}.png")
        rows.append((r.image_id, round(float(m.mean()), 4), method))
        methods[method] = methods.get(method, 0) + 1
        if len(sheet_imgs) < sheet_count and img.shape == (sheet_imgs[0].shape if sheet_imgs else img.shape):
            sheet_imgs.append(img)
            sheet_masks.append(m)
    with open(out / "masks.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "coverage", "method"])
        w.writerows(rows)
    contact_sheet(np.stack(sheet_imgs), np.stack(sheet_masks), out / "contact_sheet.png")
    cov = np.array([c for _, c, _ in rows])
    summary = {
        "source": str(source),
        "n": len(rows),
        "size": size,
        "coverage_mean": round(float(cov.mean()), 4),
        "coverage_median": round(float(np.median(cov)), 4),
        "coverage_p10": round(float(np.percentile(cov, 10)), 4),
        "coverage_p90": round(float(np.percentile(cov, 90)), 4),
        "methods": methods,
    }
    if ious:
        summary["otsu_vs_expert_iou"] = _quantiles(ious)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
