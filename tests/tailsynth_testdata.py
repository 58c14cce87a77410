"""Tiny generated datasets for unit tests (importable by a unique name; `conftest` is ambiguous across folders)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


def make_isic_folder(root: Path, labels: list[str], size: int = 32, lesions: list[str] | None = None,
                     seed: int = 0, one_hot_as_int: bool = False) -> Path:
    """A tiny ISIC 2019 layout folder with real JPEG files: a darker blob (the 'lesion') on skin-coloured ground."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    img_dir = root / "ISIC_2019_Training_Input"
    img_dir.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    with open(root / "ISIC_2019_Training_GroundTruth.csv", "w", newline="") as f, \
            open(root / "ISIC_2019_Training_Metadata.csv", "w", newline="") as fm:
        w, wm = csv.writer(f), csv.writer(fm)
        w.writerow(["image", *CLASSES])
        wm.writerow(["image", "age_approx", "anatom_site_general", "lesion_id", "sex"])
        for i, lab in enumerate(labels):
            name = f"ISIC_{i:07d}"
            ci = CLASSES.index(lab)
            base = np.array([220, 170, 150]) + rng.integers(-15, 15, 3)
            img = np.ones((size, size, 3)) * base
            cy, cx = size / 2 + rng.normal(0, size / 10, 2)
            r = size * (0.15 + 0.1 * rng.random())
            blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < r ** 2
            img[blob] = np.array([120 - 8 * ci, 70 + 10 * ci, 60 + 12 * ci])
            img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(img_dir / f"{name}.jpg", quality=92)
            hot = [("1" if one_hot_as_int else "1.0") if c == lab else ("0" if one_hot_as_int else "0.0") for c in CLASSES]
            w.writerow([name, *hot])
            lesion = lesions[i] if lesions else ""
            wm.writerow([name, int(rng.integers(3, 17)) * 5, "anterior torso", lesion, ["male", "female"][i % 2]])
    return root


def make_npz(path: Path, counts: dict[str, list[int]] | None = None, size: int = 28, seed: int = 0) -> Path:
    """A tiny MedMNIST-layout npz; counts: split -> per-label counts in npz label order (akiec..vasc)."""
    rng = np.random.default_rng(seed)
    counts = counts or {"train": [6, 6, 8, 3, 8, 20, 3], "val": [2, 2, 2, 1, 2, 5, 1]}
    arrays = {}
    for split, per in counts.items():
        ys = np.concatenate([np.full(n, k) for k, n in enumerate(per)]).astype(np.uint8)
        xs = np.empty((len(ys), size, size, 3), np.uint8)
        for i, y in enumerate(ys):
            base = np.array([200, 150, 140]) - 10 * y
            xs[i] = np.clip(base + rng.normal(0, 8, (size, size, 3)), 0, 255)
        arrays[f"{split}_images"] = xs
        arrays[f"{split}_labels"] = ys.reshape(-1, 1)
    np.savez(path, **arrays)
    return path


HAM_DX = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AK": "akiec", "BKL": "bkl", "DF": "df", "VASC": "vasc"}


def make_ham_folder(root: Path, lesions: dict[str, int], width: int = 40, height: int = 30, seed: int = 0) -> Path:
    """A tiny HAM10000-layout folder: `lesions` maps a class to its number of lesions; lesion k of a class has
    1 + (k % 3) images (so many lesions have several), each a real JPEG with an expert-style soft mask PNG of the
    same size (edge pixels hold intermediate values, as in HAM10000's resized masks)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:height, :width]
    n = 0
    with open(root / "HAM10000_metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"])
        for ci, (cls, n_lesions) in enumerate(lesions.items()):
            for k in range(n_lesions):
                lesion = f"HAM_{ci:02d}{k:05d}"
                for _ in range(1 + k % 3):
                    iid = f"ISIC_{n:07d}"
                    n += 1
                    cy, cx = height / 2 + rng.normal(0, 2), width / 2 + rng.normal(0, 2)
                    r = min(width, height) * (0.2 + 0.1 * rng.random())
                    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
                    soft = np.clip((r + 1 - dist) / 2, 0, 1)  # 1 inside, a 2 px ramp at the edge
                    skin = np.array([220, 170, 150]) + rng.integers(-15, 15, 3)
                    lesion_rgb = np.array([120 - 8 * ci, 70 + 10 * ci, 60 + 12 * ci])
                    img = skin * (1 - soft[..., None]) + lesion_rgb * soft[..., None]
                    img = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
                    Image.fromarray(img).save(root / "images" / f"{iid}.jpg", quality=92)
                    Image.fromarray((soft * 255).astype(np.uint8)).save(root / "masks" / f"{iid}_segmentation.png")
                    w.writerow([lesion, iid, HAM_DX[cls], "histo", int(rng.integers(3, 17)) * 5,
                                ["male", "female"][n % 2], "back"])
    return root
