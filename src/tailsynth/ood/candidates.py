"""Reading a candidate folder written by `tailsynth generate`.

GEN_DIR/manifest.csv (id, class, background_id, mask_source, seed, ...) and GEN_DIR/images/<id>.png;
GEN_DIR/synthetic_ground_truth.csv (ISIC one-hot) is the fallback when there is no manifest.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.errors import DataError

# A harmonized lesion whose pixels moved less than this RMS (0..1 scale, about 5 grey levels) from the pasted
# real lesion is that lesion with a little noise: a near-copy, not a new sample.
SOURCE_COPY_RMS = 0.02


@dataclass
class Candidates:
    root: Path
    ids: list[str]
    classes: list[str]  # intended ISIC class per candidate
    paths: list[Path]
    background_ids: list[str]  # "" when unknown
    source_ids: list[str] | None = None  # harmonize: the real lesion pasted in ("" otherwise)
    source_rms: np.ndarray | None = None  # harmonize: RMS change from that lesion inside its region (nan otherwise)

    def near_source_copies(self, threshold: float | None = None) -> np.ndarray:
        """Harmonized candidates that barely moved from the real lesion they were made from."""
        threshold = SOURCE_COPY_RMS if threshold is None else threshold
        if self.source_rms is None:
            return np.zeros(len(self.ids), bool)
        return np.nan_to_num(self.source_rms, nan=np.inf) < threshold

    def __len__(self) -> int:
        return len(self.ids)

    def images(self, size: int) -> np.ndarray:
        from ..data.isic import decode_file
        from ..data.records import resize_rgb

        out = np.empty((len(self.ids), size, size, 3), np.uint8)
        for i, p in enumerate(self.paths):
            img = decode_file(str(p))
            out[i] = img if img.shape[:2] == (size, size) else resize_rgb(img, size)
        return out


def _image_path(folder: Path, iid: str) -> Path:
    for ext in (".png", ".jpg", ".jpeg"):
        p = folder / f"{iid}{ext}"
        if p.is_file():
            return p
    return folder / f"{iid}.png"


def read_candidates(gen_dir: str | Path) -> Candidates:
    root = Path(gen_dir)
    if not root.is_dir():
        raise DataError(f"{root}: candidate folder not found")
    img_dir = root / "images"
    manifest = root / "manifest.csv"
    ids, classes, bgs, srcs, src_rms = [], [], [], [], []
    if manifest.is_file():
        with open(manifest, newline="") as f:
            reader = csv.DictReader(f)
            for col in ("id", "class"):
                if col not in (reader.fieldnames or []):
                    raise DataError(f"{manifest}: missing column {col!r} (header: {','.join(reader.fieldnames or [])})")
            for row_no, row in enumerate(reader, start=2):
                iid, cls = (row.get("id") or "").strip(), (row.get("class") or "").strip()
                if not iid or not cls:
                    raise DataError(f"{manifest}: row {row_no}: empty id or class")
                ids.append(iid)
                classes.append(cls)
                bgs.append((row.get("background_id") or "").strip())
                srcs.append((row.get("source_id") or "").strip())
                v = (row.get("source_rms") or "").strip()
                try:
                    src_rms.append(float(v) if v else np.nan)
                except ValueError:
                    raise DataError(f"{manifest}: row {row_no}: source_rms {v!r} is not a number") from None
    elif (root / "synthetic_ground_truth.csv").is_file():
        from ..data.isic import read_ground_truth

        for iid, cls in read_ground_truth(root / "synthetic_ground_truth.csv"):
            ids.append(iid)
            classes.append(cls)
            bgs.append("")
            srcs.append("")
            src_rms.append(np.nan)
    else:
        raise DataError(f"{root}: no manifest.csv or synthetic_ground_truth.csv (expected the output of `tailsynth generate`)")
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"{root}: candidate id {dup!r} appears more than once")
    paths = [_image_path(img_dir, i) for i in ids]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{missing[0]}: candidate image missing ({len(missing)} of {len(paths)} missing)")
    return Candidates(root, ids, classes, paths, bgs, srcs, np.array(src_rms, dtype=np.float64))
