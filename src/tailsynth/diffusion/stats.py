"""Colour statistics inside the lesion mask: generated vs real, per class.

A cheap, early check that a model paints the right lesion colours (a model that paints teal blobs has
the wrong mean long before a person looks at the grid).
"""

from __future__ import annotations

import numpy as np


def _mean_inside(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per-image mean RGB inside its mask (N,3)."""
    m = masks[..., None].astype(np.float32)
    return (images.astype(np.float32) * m).sum((1, 2)) / np.maximum(m.sum((1, 2)), 1)


def real_colour_stats(data, resolution: int, classes=None, limit: int = 200, seed: int = 0) -> dict:
    from ..data import ensure_splits, load_source
    from ..masks import segment_batch

    train = ensure_splits(load_source(data), seed=0).split("train")
    rng = np.random.default_rng(seed)
    out = {}
    for c in classes or train.classes:
        recs = [r for r in train.records if r.label == c]
        if not recs:
            continue
        recs = [recs[i] for i in sorted(rng.choice(len(recs), min(limit, len(recs)), replace=False))]
        imgs = np.stack([train.image(r, resolution) for r in recs])
        masks, _ = segment_batch(imgs)
        per = _mean_inside(imgs, masks)
        out[c] = {"n": len(recs), "mean_rgb": per.mean(0).round(1).tolist(), "std_rgb": per.std(0).round(1).tolist()}
    return out


def generated_colour_stats(gen_dir) -> dict:
    """From a `generate --save-inputs` folder: mean RGB inside the mask the model painted, per class."""
    from ..data.isic import decode_file
    from .candidate_set import CandidateSet

    cs = CandidateSet(gen_dir)
    by: dict[str, list] = {}
    for r in cs.rows():
        mask = cs.input_path(r, "mask")  # a ConfigError without --save-inputs
        img = decode_file(str(cs.image_path(r["id"])))
        m = decode_file(str(mask))[..., 0] > 127
        by.setdefault(r["class"], []).append(_mean_inside(img[None], m[None])[0])
    return {c: {"n": len(v), "mean_rgb": np.mean(v, 0).round(1).tolist(), "std_rgb": np.std(v, 0).round(1).tolist()}
            for c, v in by.items()}


def compare_colours(gen_dir, data, resolution: int) -> dict:
    """Per class: generated and real mean RGB inside the mask, and their distance (RGB units, 0-255 scale)."""
    gen = generated_colour_stats(gen_dir)
    real = real_colour_stats(data, resolution, classes=list(gen) + ["NV"])
    out = {}
    for c, g in gen.items():
        rc = real.get(c)
        out[c] = {"generated": g, "real": rc,
                  "distance": round(float(np.linalg.norm(np.subtract(g["mean_rgb"], rc["mean_rgb"]))), 1) if rc else None,
                  "distance_to_real_NV": round(float(np.linalg.norm(np.subtract(g["mean_rgb"], real["NV"]["mean_rgb"]))), 1)
                  if "NV" in real else None}
    return out
