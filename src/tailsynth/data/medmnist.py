"""Reader for the MedMNIST `dermamnist.npz` layout: {train,val,test}_images / _labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .classes import HAM_TO_ISIC, MEDMNIST_CODES, canonical_order
from .errors import DataError
from .records import LesionDataset, Record

SPLITS = ("train", "val", "test")
CLASSES = [HAM_TO_ISIC[c] for c in MEDMNIST_CODES]  # index order of the npz labels


def load_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an npz file; DataError naming the file when it is missing or unreadable."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        npz = np.load(path)
        return {k: npz[k] for k in npz.files}
    except Exception as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from e


def read_npz(path: str | Path) -> LesionDataset:
    path = Path(path)
    arrays = load_npz_arrays(path)
    present = [s for s in SPLITS if f"{s}_images" in arrays or f"{s}_labels" in arrays]
    if not present:
        raise DataError(f"{path}: no '<split>_images'/'<split>_labels' keys (found {sorted(arrays)})")
    records, images = [], {}
    for s in present:
        for key in (f"{s}_images", f"{s}_labels"):
            if key not in arrays:
                raise DataError(f"{path}: key {key!r} missing")
        x, y = arrays[f"{s}_images"], arrays[f"{s}_labels"].reshape(-1)
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
            raise DataError(f"{path}: {s}_images has shape {x.shape} dtype {x.dtype}, expected N,H,W,3 uint8")
        if len(x) != len(y):
            raise DataError(f"{path}: {s}_images has {len(x)} rows but {s}_labels has {len(y)}")
        bad = np.flatnonzero((y < 0) | (y >= len(CLASSES)))
        if len(bad):
            raise DataError(f"{path}: {s}_labels row {int(bad[0])} has label {int(y[bad[0]])}, outside 0..{len(CLASSES)-1}")
        images[s] = x
        for i, lab in enumerate(y):
            iid = f"{s}_{i:05d}"
            # DermaMNIST carries no lesion ids: each image is its own group.
            # npz_split keeps the pixel lookup valid after a split manifest re-labels the record.
            records.append(Record(image_id=iid, label=CLASSES[int(lab)], group_id=iid, split=s, index=i,
                                  meta={"npz_split": s}))
    native = int(images[present[0]].shape[1])
    classes = canonical_order(CLASSES)
    return LesionDataset(records, str(path), "medmnist", lambda r: images[r.meta.get("npz_split", r.split)][r.index], classes, native)
