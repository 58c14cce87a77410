"""Reader for the ISIC 2019 layout (training or test ground truth, optional metadata).

<root>/ISIC_2019_Training_Input/<image>.jpg + ISIC_2019_Training_GroundTruth.csv [+ _Metadata.csv]
(or the same with `Test`). Synthetic sets written by `tailsynth generate` use
`synthetic_ground_truth.csv` + `images/<id>.png` in the same one-hot format.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from .classes import ISIC2019_CLASSES
from .errors import DataError
from .records import LesionDataset, Record

LAYOUTS = (
    # (ground truth csv, metadata csv, image folder, split name)
    ("ISIC_2019_Training_GroundTruth.csv", "ISIC_2019_Training_Metadata.csv", "ISIC_2019_Training_Input", "all"),
    ("ISIC_2019_Test_GroundTruth.csv", "ISIC_2019_Test_Metadata.csv", "ISIC_2019_Test_Input", "test"),
    ("synthetic_ground_truth.csv", "synthetic_metadata.csv", "images", "all"),
)
IMAGE_EXTS = (".jpg", ".jpeg", ".png")


PARTS = {"training": 0, "test": 1, "synthetic": 2}


def find_layout(root: Path, part: str | None = None):
    """(ground truth, metadata, image folder, split) of the first layout present, or of `part`."""
    if part is not None:
        if part not in PARTS:
            raise DataError(f"unknown ISIC part {part!r} (expected one of {', '.join(PARTS)})")
        gt, meta, images, split = LAYOUTS[PARTS[part]]
        return (root / gt, root / meta, root / images, split) if (root / gt).is_file() else None
    for gt, meta, images, split in LAYOUTS:
        if (root / gt).is_file():
            return root / gt, root / meta, root / images, split
    return None


def is_isic_folder(root: Path) -> bool:
    return root.is_dir() and find_layout(root) is not None


def _parse_one_hot(gt_path: Path, row_no: int, row: dict, columns: list[str]) -> str:
    hot = []
    for c in columns:
        raw = (row.get(c) or "").strip()
        try:
            v = float(raw)
        except ValueError:
            raise DataError(f"{gt_path}: row {row_no} (image {row.get('image')!r}): column {c} is {raw!r}, not 0/1")
        if v not in (0.0, 1.0):
            raise DataError(f"{gt_path}: row {row_no} (image {row.get('image')!r}): column {c} is {raw!r}, not 0/1")
        if v == 1.0:
            hot.append(c)
    if len(hot) != 1:
        raise DataError(
            f"{gt_path}: row {row_no} (image {row.get('image')!r}) is not one-hot: "
            f"{len(hot)} classes set ({','.join(hot) or 'none'})"
        )
    return hot[0]


def read_ground_truth(gt_path: Path) -> list[tuple[str, str]]:
    """(image, class) pairs; raises DataError naming the file and row of any fault."""
    with open(gt_path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if "image" not in header:
            raise DataError(f"{gt_path}: missing column 'image' (header: {','.join(header)})")
        columns = [c for c in header if c != "image" and c != "score_weight" and c != "validation_weight"]
        required = [c for c in ISIC2019_CLASSES if c != "UNK"]
        missing = [c for c in required if c not in columns]
        if missing:
            raise DataError(f"{gt_path}: missing class column(s) {','.join(missing)}")
        out, seen = [], {}
        for i, row in enumerate(reader, start=2):  # row 1 is the header
            name = (row.get("image") or "").strip()
            if not name:
                raise DataError(f"{gt_path}: row {i}: empty image name")
            if name in seen:
                raise DataError(f"{gt_path}: row {i}: image {name!r} duplicates row {seen[name]}")
            seen[name] = i
            out.append((name, _parse_one_hot(gt_path, i, row, columns)))
    return out


def read_metadata(meta_path: Path) -> dict[str, dict]:
    if not meta_path.is_file():
        return {}
    with open(meta_path, newline="") as f:
        return {row["image"]: {k: v for k, v in row.items() if k != "image"} for row in csv.DictReader(f)}


def list_images(folder: Path) -> dict[str, Path]:
    """image name -> file, from one directory scan (one stat per row is slow on 25k-image folders)."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found  # labels-only folder: records keep their would-be paths
    rank = {e: i for i, e in enumerate(IMAGE_EXTS)}
    with os.scandir(folder) as it:
        for e in it:
            stem, ext = os.path.splitext(e.name)
            ext = ext.lower()
            if ext in rank and (stem not in found or rank[ext] < rank[found[stem].suffix.lower()]):
                found[stem] = Path(e.path)
    return found


def _image_path(folder: Path, name: str, files: dict[str, Path]) -> Path:
    return files.get(name) or folder / f"{name}.jpg"  # a missing file is reported by validation


def decode_file(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: image file missing") from None
    except Exception as e:  # PIL raises many types for corrupt data
        raise DataError(f"{path}: cannot decode image ({e})") from e


def read_isic_folder(root: str | Path, part: str | None = None) -> LesionDataset:
    """Records of an ISIC 2019 folder; `part` picks "training"/"test"/"synthetic" when several are present.

    Images are not opened here, so a labels-only folder (ground truth without the image folder) reads too.
    """
    root = Path(root)
    layout = find_layout(root, part)
    if layout is None:
        raise DataError(
            f"{root}: not an ISIC 2019 folder (expected one of "
            + ", ".join(gt for gt, *_ in (LAYOUTS if part is None else [LAYOUTS[PARTS[part]]]))
            + ")"
        )
    gt_path, meta_path, img_dir, split = layout
    meta = read_metadata(meta_path)
    files = list_images(img_dir)
    records = []
    for name, label in read_ground_truth(gt_path):
        m = meta.get(name, {})
        lesion = (m.get("lesion_id") or "").strip()
        records.append(
            Record(
                image_id=name,
                label=label,
                group_id=lesion or name,
                split=(m.get("split") or split).strip() or split,
                path=str(_image_path(img_dir, name, files)),
                meta=m,
            )
        )
    return LesionDataset(records, str(root), "isic2019", lambda r: decode_file(r.path))
