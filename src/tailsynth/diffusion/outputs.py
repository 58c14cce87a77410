"""The PNG writers of a generation run: one image, and a contact sheet of images (the folder's tables, record and
grids are `candidate_set`'s)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


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
