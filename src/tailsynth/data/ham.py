"""Reader for the HAM10000 layout: `HAM10000_metadata.csv` + `images/<image_id>.jpg` + `masks/<id>_segmentation.png`.

HAM10000 holds several images of many lesions, so every record's group is its `lesion_id` and every split or
fold made from this source is lesion-grouped. Images are 200x150 (4:3); like DermaMNIST (made from the same
images) they are resized to a square of the run's resolution without cropping, so the whole lesion and its expert
mask stay in frame. Decoded, resized pixels are cached per process by file content hash: an epoch, a second
stage in the same process or a duplicate file never decodes a JPEG again.
"""

from __future__ import annotations

import csv
import hashlib
import threading
from pathlib import Path

import numpy as np

from .classes import HAM_TO_ISIC, canonical_order
from .errors import DataError
from .records import LesionDataset, Record

METADATA = "HAM10000_metadata.csv"
IMAGES = "images"
MASKS = "masks"
MASK_SUFFIX = "_segmentation.png"
COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
REQUIRED = ("lesion_id", "image_id", "dx")
DEFAULT_RESOLUTION = 64  # the default for this source; 32/48/96/128 are the other sizes the models use
RESOLUTIONS = (32, 48, 64, 96, 128)
SPLIT = "all"  # HAM10000 ships no split: folds are made lesion-grouped by the split stage


def is_ham_folder(root: Path) -> bool:
    return root.is_dir() and (root / METADATA).is_file()


def mask_path(root: Path, image_id: str) -> Path:
    return root / MASKS / f"{image_id}{MASK_SUFFIX}"


def read_metadata_rows(meta_path: Path) -> list[dict]:
    """Metadata rows with their CSV line number under `_row`; DataError naming the file and row of any fault."""
    try:
        with open(meta_path, newline="") as f:
            reader = csv.DictReader(f)
            header = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise DataError(f"{meta_path}: missing column(s) {', '.join(missing)} (header: {','.join(header)})")
            rows = []
            for i, row in enumerate(reader, start=2):  # line 1 is the header
                row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                row["_row"] = i
                rows.append(row)
            return rows
    except UnicodeDecodeError as e:
        raise DataError(f"{meta_path}: not a text CSV ({e})") from e


def check_rows(meta_path: Path, rows: list[dict]) -> None:
    """The table faults that make a record meaningless: no image id, no lesion id, unknown dx, a repeated image."""
    seen: dict[str, int] = {}
    for row in rows:
        where = f"{meta_path}: row {row['_row']}"
        iid = row.get("image_id", "")
        if not iid:
            raise DataError(f"{where}: empty image_id")
        if not row.get("lesion_id"):
            raise DataError(f"{where} (image {iid!r}): empty lesion_id (images must be grouped by lesion)")
        if row.get("dx") not in HAM_TO_ISIC:
            raise DataError(f"{where} (image {iid!r}): unknown dx {row.get('dx')!r} "
                            f"(expected one of {', '.join(HAM_TO_ISIC)})")
        if iid in seen:
            raise DataError(f"{where}: image {iid!r} listed twice (first on row {seen[iid]})")
        seen[iid] = row["_row"]


def copy_subset(src: str | Path, dest: str | Path, keep_ids: set[str]) -> Path:
    """Copy the images and masks of `keep_ids` and their metadata rows from SRC into DEST (same layout, bytes
    unchanged). Whole lesions are not enforced here: a cap per class may cut one, and the folds stay grouped."""
    import shutil

    src, dest = Path(src), Path(dest)
    (dest / IMAGES).mkdir(parents=True, exist_ok=True)
    (dest / MASKS).mkdir(parents=True, exist_ok=True)
    with open(src / METADATA, newline="") as f, open(dest / METADATA, "w", newline="") as g:
        reader = csv.DictReader(f)
        w = csv.DictWriter(g, fieldnames=reader.fieldnames or [])
        w.writeheader()
        for row in reader:
            iid = (row.get("image_id") or "").strip()
            if iid not in keep_ids:
                continue
            w.writerow(row)
            shutil.copyfile(src / IMAGES / f"{iid}.jpg", dest / IMAGES / f"{iid}.jpg")
            if mask_path(src, iid).is_file():
                shutil.copyfile(mask_path(src, iid), mask_path(dest, iid))
    return dest


class ResizedImageCache:
    """(content hash, size) -> HxWx3 uint8, filled on first use; thread-safe so threaded decoders can share it."""

    def __init__(self) -> None:
        self._digest: dict[str, str] = {}
        self._pixels: dict[tuple[str, int], np.ndarray] = {}
        self._lock = threading.Lock()

    def get(self, path: str, size: int) -> np.ndarray:
        digest = self._digest.get(path)
        if digest is not None:
            hit = self._pixels.get((digest, size))
            if hit is not None:
                return hit
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise DataError(f"{path}: image file missing") from None
        digest = hashlib.sha1(data).hexdigest()
        key = (digest, size)
        with self._lock:
            self._digest[path] = digest
            hit = self._pixels.get(key)
        if hit is None:
            hit = decode_resized(data, path, size)
            hit.setflags(write=False)  # shared between callers: nobody may paint on the cached copy
            with self._lock:
                self._pixels[key] = hit
        return hit


_CACHE = ResizedImageCache()


def decode_resized(data: bytes, path: str, size: int) -> np.ndarray:
    import io

    from PIL import Image

    from .records import resize_rgb

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # PIL raises many types for corrupt data
        raise DataError(f"{path}: cannot decode image ({e})") from e
    return resize_rgb(rgb, size)


def read_ham_folder(root: str | Path, resolution: int = DEFAULT_RESOLUTION) -> LesionDataset:
    """Records of a HAM10000 folder: label = ISIC 2019 class of `dx`, group = `lesion_id`, mask path in meta.

    Files are not opened here (validation names missing or corrupt ones); table faults are errors at once.
    """
    root = Path(root)
    meta_path = root / METADATA
    if not meta_path.is_file():
        raise DataError(f"{root}: not a HAM10000 folder ({METADATA} not found)")
    if resolution not in RESOLUTIONS:
        raise DataError(f"{root}: resolution {resolution} not supported for HAM10000 (use one of {RESOLUTIONS})")
    rows = read_metadata_rows(meta_path)
    check_rows(meta_path, rows)
    records = []
    for row in rows:
        iid = row["image_id"]
        meta = {k: row.get(k, "") for k in COLUMNS if k not in ("image_id",)}
        meta["mask_path"] = str(mask_path(root, iid))
        records.append(Record(image_id=iid, label=HAM_TO_ISIC[row["dx"]], group_id=row["lesion_id"], split=SPLIT,
                              path=str(root / IMAGES / f"{iid}.jpg"), meta=meta))
    return HamDataset(records, str(root), resolution)


class HamDataset(LesionDataset):
    """A LesionDataset whose pixels come from the shared resized-image cache, at any requested square size."""

    def __init__(self, records, source: str, resolution: int = DEFAULT_RESOLUTION, classes=None):
        # Every HAM10000 class always, so a fold or subset without one keeps the same class indices.
        classes = classes or canonical_order(HAM_TO_ISIC.values())
        super().__init__(records, source, "ham10000", lambda r: _CACHE.get(r.path, resolution), classes,
                         native_size=resolution)
        self.resolution = resolution

    def subset(self, records) -> HamDataset:
        return HamDataset(list(records), self.source, self.resolution, self.classes)

    def image(self, record: Record, size: int | None = None) -> np.ndarray:
        return _CACHE.get(record.path, size or self.resolution)

    def stats(self) -> dict:
        """Images and lesions per class (a lesion counts under the class of its images)."""
        st = super().stats()
        lesions: dict[str, set[str]] = {c: set() for c in self.classes}
        for r in self.records:
            lesions.setdefault(r.label, set()).add(r.group_id)
        st["lesions"] = {c: len(v) for c, v in lesions.items()}
        st["images"] = self.class_counts()
        st["resolution"] = self.resolution
        return st
