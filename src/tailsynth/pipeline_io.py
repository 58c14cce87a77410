"""File-level glue the pipeline components share: staging a data source into an artifact folder.

Pure Python (no KFP imports): components call these with artifact paths, tests call them directly.
A KFP artifact path has no file suffix, while `load_source` recognises an `.npz` by its suffix, so a
data artifact is always a folder holding either `<name>.npz` or an ISIC 2019 layout.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np


def locate_real_data(root: str | Path, prefer: str | None = None) -> Path | None:
    """The real data at or under ROOT: with `prefer="ham10000"` a HAM10000 folder first; else DermaMNIST under
    ROOT/dermamnist/dermamnist.npz, else a HAM10000 or ISIC 2019 folder at or under ROOT."""
    from .data.ham import is_ham_folder
    from .data.isic import is_isic_folder

    root = Path(root)
    if root.is_file() and root.suffix == ".npz":
        return root
    if root.is_dir() and (is_ham_folder(root) or is_isic_folder(root)):
        return root
    subs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if prefer == "ham10000":
        for sub in subs:
            if is_ham_folder(sub):
                return sub
    cand = root / "dermamnist" / "dermamnist.npz"
    if cand.is_file():
        return cand
    for sub in subs:
        if is_isic_folder(sub):
            return sub
    for sub in subs:
        if is_ham_folder(sub):
            return sub
    return None


def _pick(labels: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Indices keeping at most `cap` per class (all when cap <= 0), in original order."""
    if cap <= 0:
        return np.arange(len(labels))
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep.append(idx if len(idx) <= cap else rng.choice(idx, cap, replace=False))
    return np.sort(np.concatenate(keep)) if keep else np.arange(0)


def stage_source(source: str | Path, dest_dir: str | Path, max_per_class: int = 0, seed: int = 0) -> Path:
    """Copy SOURCE into DEST_DIR (an artifact folder), keeping at most `max_per_class` images per class and split.

    The cap exists for the tiny test profile; 0 copies everything byte for byte.
    """
    from .data import load_source

    src = Path(source)
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    ds = load_source(src)  # fails with a clear DataError on bad input before anything is copied
    if ds.format == "medmnist":
        out = dest / src.name
        if max_per_class <= 0:
            shutil.copyfile(src, out)
            return out
        rng = np.random.default_rng(seed)
        npz = np.load(src)
        arrays = {}
        for key in npz.files:
            if key.endswith("_labels"):
                split = key[: -len("_labels")]
                y = npz[key].reshape(-1)
                idx = _pick(y, max_per_class, rng)
                arrays[key] = npz[key][idx]
                arrays[f"{split}_images"] = npz[f"{split}_images"][idx]
        np.savez(out, **arrays)
        return out
    rng = np.random.default_rng(seed)
    if ds.format == "ham10000":
        from .data.ham import copy_subset

        labels = np.array([ds.classes.index(r.label) for r in ds.records])
        return copy_subset(src, dest, {ds.records[i].image_id for i in _pick(labels, max_per_class, rng)})
    # ISIC 2019 folder: copy the images kept and the CSV rows that describe them.
    from .data.isic import find_layout

    by_split: dict[str, list] = {}
    for r in ds.records:
        by_split.setdefault(r.split, []).append(r)
    keep_ids = set()
    for recs in by_split.values():
        labels = np.array([ds.classes.index(r.label) for r in recs])
        keep_ids.update(recs[i].image_id for i in _pick(labels, max_per_class, rng))
    kept = [r for r in ds.records if r.image_id in keep_ids]
    for r in kept:
        rel = Path(r.path).resolve().relative_to(src.resolve())
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(r.path, dest / rel)
    gt, meta, _images, _split = find_layout(src)
    for p in (gt, meta):
        if not p.is_file():
            continue
        with open(p, newline="") as f, open(dest / p.name, "w", newline="") as g:
            reader = csv.reader(f)
            w = csv.writer(g)
            w.writerow(next(reader))
            for row in reader:
                if row and row[0] in keep_ids:
                    w.writerow(row)
    return dest


def write_json(path: str | Path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    return path


def numeric_items(d: dict, prefix: str = "") -> dict[str, float]:
    """Flatten nested metric dicts to {name: float} for KFP Metrics (which holds scalars only)."""
    out: dict[str, float] = {}
    for k, v in (d or {}).items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(numeric_items(v, name + "."))
        elif isinstance(v, (bool, np.bool_)) or isinstance(v, (int, float, np.integer, np.floating)) and np.isfinite(v):
            out[name] = float(v)
    return out


def synthetic_manifest(selected_dir: str | Path) -> Path:
    """The trainer's synthetic manifest (`path,class[,weight]`) inside a selection output folder."""
    from .ood.selection import Selection

    return Selection(selected_dir).manifest()


def localize_manifest(selected_dir: str | Path) -> Path:
    """The selection at SELECTED_DIR made to carry its images (`Selection.localize`)."""
    from .ood.selection import Selection

    return Selection(selected_dir).localize()


def selection_rule(gamma: float, calibrate: float, clean_confidence: float) -> dict:
    """The select stage's rule from its numeric parameters (0 = not this rule), as `select_candidates` keywords: the
    cleaning rule when clean_confidence > 0 (the gamma keep fraction is then not used), else gamma or calibrate."""
    if clean_confidence > 0:
        if calibrate > 0:
            raise ValueError(f"clean_confidence={clean_confidence:g} and calibrate={calibrate:g}: two selection "
                             f"rules; set one of them to 0")
        return {"clean": True, "clean_confidence": clean_confidence}
    return {"gamma": gamma if gamma > 0 else None, "calibrate": calibrate if calibrate > 0 else None}


def augmented_dose(synthetic_ratio: float, synthetic_dose: str, prior_shift: bool) -> dict:
    """The augmented arm's draw plan as `train_classifier` keywords. The control (`prior_shift`) draws only real
    images: with the replacing dose, real images at the synthetic arm's class counts (ratio 0); with the additive
    one, the replay control (the same extra draws of a tail class, all real)."""
    if prior_shift:
        if synthetic_dose == "add":
            return {"synthetic_ratio": synthetic_ratio, "synthetic_dose": "replay"}
        return {"synthetic_ratio": 0.0, "synthetic_dose": "replace"}
    return {"synthetic_ratio": synthetic_ratio if synthetic_ratio > 0 else None, "synthetic_dose": synthetic_dose}


def train_arm(data_dir: str, splits_path: str, model, metrics, *, arm: str, data_revision: str,
              batch_size: int = 0, **train_kwargs) -> float:
    """Train one classifier arm into the KFP `model` artifact, log its numbers to `metrics`; val balanced accuracy.

    `model`/`metrics` are KFP Output artifacts (duck-typed: `.path`, `.metadata`, `.log_metric`), so this module
    stays free of KFP imports.
    """
    from .classify.train import train_classifier
    from .data.source import source_in

    if batch_size > 0:
        train_kwargs["batch_size"] = batch_size
    result = train_classifier(data=str(source_in(data_dir)), out=model.path, splits=splits_path, **train_kwargs)
    for k, v in numeric_items(result).items():
        metrics.log_metric(k, v)
    model.metadata.update({"backbone": train_kwargs.get("backbone"), "loss": train_kwargs.get("loss"),
                           "epochs": train_kwargs.get("epochs"), "arm": arm, "data_revision": data_revision})
    return float(result.get("balanced_accuracy", float("nan")))
