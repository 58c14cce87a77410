"""What a generation folder holds besides its images: the manifest (one row per candidate, with its
provenance), the ISIC-layout ground truth of the synthetic images, per-class preview grids, and the PNG writer
they share."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..data.classes import ISIC2019_CLASSES

MANIFEST_COLUMNS = ["id", "class", "background_id", "background_class", "mask_source", "mask_method",
                    "mask_coverage", "seed", "sampler", "steps", "guidance", "model_hash", "index",
                    "mode", "strength", "source_id", "source_rms"]
GT_FILE = "synthetic_ground_truth.csv"
GRID_COUNT = 32


def save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path, optimize=False, compress_level=6)


def write_grid(images: list[np.ndarray], path: Path, cols: int = 8, scale: int = 2) -> None:
    from PIL import Image

    if not images:
        return
    s = images[0].shape[0]
    cols = min(cols, len(images))
    rows = (len(images) + cols - 1) // cols
    sheet = np.full((rows * (s + 2), cols * (s + 2), 3), 255, np.uint8)
    for k, im in enumerate(images):
        y, x = divmod(k, cols)
        sheet[y * (s + 2) + 1: y * (s + 2) + 1 + s, x * (s + 2) + 1: x * (s + 2) + 1 + s] = im
    img = Image.fromarray(sheet)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path, compress_level=6)


def write_tables(out: Path, rows: list[dict], columns: list[str]) -> None:
    with open(out / GT_FILE, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", *ISIC2019_CLASSES])
        for r in rows:
            w.writerow([r["id"], *("1.0" if c == r["class"] else "0.0" for c in ISIC2019_CLASSES)])
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)


def write_grids(out: Path, rows: list[dict]) -> list[str]:
    from ..data.isic import decode_file

    by_class: dict[str, list[str]] = {}
    for r in rows:
        by_class.setdefault(r["class"], []).append(r["id"])
    written = []
    for c, ids in by_class.items():
        imgs = [decode_file(str(out / "images" / f"{i}.png")) for i in ids[:GRID_COUNT]]
        write_grid(imgs, out / f"grid_{c}.png")
        written.append(str(out / f"grid_{c}.png"))
    return written
