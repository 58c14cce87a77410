"""Batch scoring for replay and drills: prediction records for a data set, optionally with one class shifted.

Shifts (`NAME:CLASS[=STRENGTH]`) touch the images of CLASS only, the way a new dermoscope at one clinic
would touch one population:
  brightness:DF[=1.35]  multiply pixel values (PIL brightness enhancement factor)
  contrast:DF[=0.6]     PIL contrast enhancement factor
  blur:DF[=0.04]        Gaussian blur, radius as a fraction of the image side
  hue:DF[=0.08]         rotate hue by this fraction of the colour circle
  share:DF[=3]          change the class's share: keep each image of CLASS this many times (0.3 = keep 30%)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.errors import DataError
from ..errors import ConfigError

DEFAULT_STRENGTH = {"brightness": 1.35, "contrast": 0.6, "blur": 0.04, "hue": 0.08, "share": 3.0}


@dataclass(frozen=True)
class Shift:
    name: str
    cls: str
    strength: float

    def __str__(self) -> str:
        return f"{self.name}:{self.cls}={self.strength:g}"


def parse_shift(spec: str, classes: Sequence[str] | None = None) -> Shift:
    name, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ConfigError(f"--shift {spec!r}: expected NAME:CLASS[=STRENGTH], e.g. brightness:DF")
    if name not in DEFAULT_STRENGTH:
        raise ConfigError(f"--shift {spec!r}: unknown shift {name!r} (known: {', '.join(DEFAULT_STRENGTH)})")
    cls, _, val = rest.partition("=")
    if classes is not None and cls not in classes:
        raise ConfigError(f"--shift {spec!r}: class {cls!r} is not one of {', '.join(classes)}")
    try:
        strength = float(val) if val else DEFAULT_STRENGTH[name]
    except ValueError:
        raise ConfigError(f"--shift {spec!r}: strength {val!r} is not a number") from None
    if strength < 0:
        raise ConfigError(f"--shift {spec!r}: strength must be >= 0")
    return Shift(name, cls, strength)


def _corrupt(img: np.ndarray, shift: Shift) -> np.ndarray:
    from PIL import Image, ImageEnhance, ImageFilter

    pil = Image.fromarray(img)
    if shift.name == "brightness":
        pil = ImageEnhance.Brightness(pil).enhance(shift.strength)
    elif shift.name == "contrast":
        pil = ImageEnhance.Contrast(pil).enhance(shift.strength)
    elif shift.name == "blur":
        pil = pil.filter(ImageFilter.GaussianBlur(radius=shift.strength * max(img.shape[:2])))
    elif shift.name == "hue":
        hsv = np.asarray(pil.convert("HSV")).copy()
        hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + round(shift.strength * 256)) % 256).astype(np.uint8)
        pil = Image.fromarray(hsv, "HSV").convert("RGB")
    return np.asarray(pil, dtype=np.uint8)


def apply_shifts(images: np.ndarray, labels: Sequence[str], shifts: Sequence[Shift],
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images after corruption, row indices into the input) — share shifts change which rows are kept."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    rows = np.arange(len(images))
    for s in shifts:
        if s.name != "share":
            continue
        own = rows[labels[rows] == s.cls]
        other = rows[labels[rows] != s.cls]
        whole, frac = int(s.strength), s.strength - int(s.strength)
        extra = own[rng.random(len(own)) < frac]
        rows = np.sort(np.concatenate([other] + [own] * whole + [extra]))
    out = images[rows].copy()
    for s in shifts:
        if s.name == "share":
            continue
        for i in np.flatnonzero(labels[rows] == s.cls):
            out[i] = _corrupt(out[i], s)
    return out, rows


def score_arrays(model, meta: dict, images: np.ndarray, *, embedder=None, version: str,
                 labels: Sequence[str] | None = None, hashes: Sequence[str] | None = None,
                 request_ids: Sequence[str] | None = None, timestamps: Sequence[str] | None = None,
                 source: str | None = None, batch_size: int = 256) -> list[dict]:
    """Records for uint8 N x H x W x 3 images (statistics on the images as given, prediction at model size)."""
    from ..classify.model import predict_arrays
    from ..data.records import resize_rgb
    from ..predictions import image_statistics, make_record
    from .records import image_hash

    res = int(meta.resolution)
    stats = image_statistics(images) if len(images) else {}
    model_in = images if images.shape[1:3] == (res, res) else np.stack([resize_rgb(im, res) for im in images])
    probs, feats, _ = predict_arrays(model, meta, model_in, batch_size=batch_size, features=True)
    emb = embedder.transform(feats) if embedder is not None else None
    out = []
    for i in range(len(images)):
        out.append(make_record(
            probabilities=probs[i], classes=meta.classes,
            image_stats={k: v[i] for k, v in stats.items()},
            image_hash=hashes[i] if hashes is not None else image_hash(images[i]),
            model_version=version,
            embedding=emb[i] if emb is not None else None,
            request_id=request_ids[i] if request_ids is not None else None,
            timestamp=timestamps[i] if timestamps is not None else None,
            label=labels[i] if labels is not None else None,
            source=source,
        ))
    return out


def select_split(data: str | Path, split: str, splits: str | Path | None = None):
    """Records of SPLIT, from the source's own splits or a manifest `image_id,split`.

    The manifest selects records by id but leaves each record's own split in place, because the npz
    reader finds pixels by the record's original split (re-labelled records could not be decoded).
    """
    from ..data import load_source
    from ..data.source import read_split_manifest

    ds = load_source(data)
    if splits is None:
        return ds.split(split)
    assignment = read_split_manifest(splits)
    return ds.subset(r for r in ds.records if assignment.get(r.image_id) == split)


def load_split(data: str | Path, split: str, splits: str | Path | None = None):
    """(dataset view of one split, uint8 images at native size, class names of each row)."""
    part = select_split(data, split, splits)
    if len(part) == 0:
        raise DataError(f"{data}: split {split!r} is empty" + (f" in manifest {splits}" if splits else ""))
    size = part.native_size
    if size is None:  # folder sources: use the first image's size for all
        size = part.image(part.records[0]).shape[0]
    images, _ = part.arrays(size)
    return part, images, [r.label for r in part.records]


def score_dataset(model: str | Path, data: str | Path, split: str = "val", shift: Sequence[str] | str | None = None,
                  out: str | Path | None = None, splits: str | Path | None = None, seed: int = 0,
                  with_labels: bool = True, limit: int | None = None, endpoint_url: str | None = None) -> dict:
    """Score one split of DATA with the model in MODEL and append its records to OUT (JSONL path or s3://)."""
    import torch

    from ..classify.model import load_classifier
    from ..hashing import model_version
    from ..predictions import Embedder
    from .records import open_sink

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    net, meta = load_classifier(model)
    embedder = Embedder.load(model)
    part, images, labels = load_split(data, split, splits)
    shifts = [parse_shift(s, meta.classes) for s in ([shift] if isinstance(shift, str) else (shift or []))]
    images, rows = apply_shifts(images, labels, shifts, seed=seed)
    labels = [labels[i] for i in rows]
    ids = [part.records[i].image_id for i in rows]
    if limit is not None:
        images, labels, ids = images[:limit], labels[:limit], ids[:limit]
    recs = score_arrays(net, meta, images, embedder=embedder, version=model_version(model),
                        labels=labels if with_labels else None,
                        request_ids=[f"{split}:{iid}:{k}" for k, iid in enumerate(ids)],
                        source=f"replay {Path(data).name}:{split}" + (f" {' '.join(map(str, shifts))}" if shifts else ""))
    n = open_sink(out, endpoint_url=endpoint_url).write(recs) if out is not None else 0
    counts: dict[str, int] = {}
    for r in recs:
        counts[r["predicted"]] = counts.get(r["predicted"], 0) + 1
    return {"records": len(recs), "written": n, "out": str(out) if out else None,
            "shifts": [str(s) for s in shifts], "predicted_counts": counts, "records_list": recs}
