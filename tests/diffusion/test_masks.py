import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tailsynth.masks import METHOD_FALLBACK, METHOD_OTSU, compute_masks, read_mask_file, segment_lesion


def _blob_image(size=48, centre=(20, 28), radius=9, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = np.ones((size, size, 3)) * np.array([215, 165, 150])
    blob = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2
    img[blob] = [110, 70, 60]
    return np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8), blob


def test_segment_finds_the_blob():
    img, blob = _blob_image()
    mask, method = segment_lesion(img)
    assert method == METHOD_OTSU
    iou = (mask & blob).sum() / (mask | blob).sum()
    assert iou > 0.8, iou


def test_flat_image_falls_back_to_ellipse():
    img = np.full((32, 32, 3), 180, np.uint8)
    mask, method = segment_lesion(img)
    assert method == METHOD_FALLBACK
    assert 0.2 < mask.mean() < 0.4


def test_compute_masks_writes_pngs_csv_and_sheet(tiny_isic, tmp_path):
    out = tmp_path / "m"
    summary = compute_masks(tiny_isic, out)
    rows = list(csv.DictReader(Path(out / "masks.csv").read_text().splitlines()))
    assert list(rows[0]) == ["image", "coverage", "method"]
    assert len(rows) == summary["n"] == 45
    assert (out / "contact_sheet.png").is_file()
    assert json.loads((out / "summary.json").read_text())["n"] == 45
    # The fixture paints a darker blob in every image: the segmentation should find it, not fall back.
    assert summary["methods"].get("otsu", 0) >= 40
    m = read_mask_file(out / f"{rows[0]['image']}.png")
    assert m.shape == (32, 32) and abs(m.mean() - float(rows[0]["coverage"])) < 1e-3
    assert 0.03 < summary["coverage_median"] < 0.5


def test_bad_mask_file_is_named(tmp_path):
    from tailsynth.data.errors import DataError

    p = tmp_path / "x.png"
    p.write_bytes(b"not a png")
    with pytest.raises(DataError, match="x.png"):
        read_mask_file(p)
