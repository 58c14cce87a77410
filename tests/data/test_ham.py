"""The HAM10000 source: reader, resized-image cache, Great Expectations checks, lesion-grouped folds."""

from __future__ import annotations

import csv
import json
from collections import defaultdict

import numpy as np
import pytest
from data_helpers import read_rows, truncate, write_rows
from typer.testing import CliRunner

from tailsynth.cli import app
from tailsynth.data import load_source
from tailsynth.data.errors import DataError
from tailsynth.data.ham import METADATA, ResizedImageCache
from tailsynth.data.validate import validate_source

# The exact counts of ../shared/data/README.md (its HAM10000 section).
README_IMAGES = {"AK": 247, "BCC": 409, "BKL": 870, "DF": 87, "MEL": 888, "NV": 5382, "VASC": 106}
README_LESIONS = {"AK": 170, "BCC": 262, "BKL": 582, "DF": 54, "MEL": 491, "NV": 4322, "VASC": 71}


def _lesions_per_class(ds) -> dict[str, int]:
    seen = defaultdict(set)
    for r in ds.records:
        seen[r.label].add(r.group_id)
    return {c: len(v) for c, v in seen.items()}


def test_reader_groups_by_lesion_and_resizes_to_square(tiny_ham):
    ds = load_source(tiny_ham)
    assert ds.format == "ham10000"
    assert ds.classes == ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]
    # lesion k has 1 + k % 3 images: 12 NV lesions -> 24 images
    assert ds.class_counts()["NV"] == 24
    assert _lesions_per_class(ds)["NV"] == 12
    rec = ds.records[1]
    assert rec.group_id.startswith("HAM_") and rec.meta["dx"] in ("mel", "nv")
    assert rec.meta["mask_path"].endswith(f"masks/{rec.image_id}_segmentation.png")
    assert ds.image(rec).shape == (64, 64, 3)  # the source's default resolution
    assert ds.image(rec, 32).shape == (32, 32, 3)
    x, y = ds.split("all").arrays(48)
    assert x.shape == (len(ds), 48, 48, 3) and y.max() < len(ds.classes)


def test_cache_decodes_each_file_once_and_shares_duplicates(tiny_ham):
    cache = ResizedImageCache()
    ds = load_source(tiny_ham)
    a, b = ds.records[0].path, ds.records[1].path
    first = cache.get(a, 64)
    assert cache.get(a, 64) is first  # the second epoch gets the same pixels back without a decode
    assert not first.flags.writeable  # nobody can paint on the shared copy
    # a byte-identical file under another name is the same cache entry (keyed on content, not path)
    import shutil

    dup = tiny_ham / "images" / "copy.jpg"
    shutil.copyfile(a, dup)
    assert cache.get(str(dup), 64) is first
    assert cache.get(b, 64) is not first


def test_stats_json_counts_images_and_lesions(tiny_ham):
    r = CliRunner().invoke(app, ["data", "stats", str(tiny_ham), "--json"])
    assert r.exit_code == 0, r.output
    st = json.loads(r.output)
    assert st["format"] == "ham10000"
    assert st["images"]["DF"] == 1 + 2 + 3 + 1 + 2 and st["lesions"]["DF"] == 5
    r = CliRunner().invoke(app, ["data", "stats", str(tiny_ham)])
    assert r.exit_code == 0 and "lesions" in r.output


def test_real_ham10000_counts_match_the_readme(ham10000):
    r = CliRunner().invoke(app, ["data", "stats", str(ham10000), "--json"])
    assert r.exit_code == 0, r.output
    st = json.loads(r.output)
    assert st["images"] == {c: README_IMAGES[c] for c in st["images"]}
    assert st["lesions"] == {c: README_LESIONS[c] for c in st["lesions"]}
    assert sum(st["images"].values()) == 7989 and sum(st["lesions"].values()) == 5952


@pytest.mark.parametrize("fault,expect", [
    ("dx", "unknown dx 'xyz'"),
    ("lesion", "empty lesion_id"),
    ("duplicate", "listed twice"),
])
def test_table_faults_name_the_row(tiny_ham, fault, expect):
    header, rows = read_rows(tiny_ham / METADATA)
    if fault == "dx":
        rows[3]["dx"] = "xyz"
    elif fault == "lesion":
        rows[3]["lesion_id"] = ""
    else:
        rows.append(dict(rows[3]))
    write_rows(tiny_ham / METADATA, header, rows)
    with pytest.raises(DataError) as e:
        load_source(tiny_ham)
    assert expect in str(e.value)
    assert f"row {len(rows) + 1 if fault == 'duplicate' else 5}" in str(e.value)
    assert METADATA in str(e.value)
    # validation names the same row instead of stopping at it
    res = validate_source(tiny_ham)
    assert not res.ok
    assert any(rows[3]["image_id"] in p for p in res.problems())


def test_validate_passes_sound_folder(tiny_ham, tmp_path):
    res = validate_source(tiny_ham, report=tmp_path / "rep")
    assert res.ok, res.problems()
    intents = {c.intent for c in res.checks}
    for want in ("every image has its mask", "mask and image sizes agree", "dx in the known set",
                 "every row names its lesion (lesion_id present)", "no image listed twice"):
        assert want in intents


def test_validate_names_truncated_jpeg_missing_mask_and_wrong_size(tiny_ham, tmp_path):
    from PIL import Image

    ds = load_source(tiny_ham)
    cut, nomask, wrong = ds.records[2], ds.records[5], ds.records[7]
    truncate(tiny_ham / "images" / f"{cut.image_id}.jpg")
    (tiny_ham / "masks" / f"{nomask.image_id}_segmentation.png").unlink()
    Image.new("L", (10, 10)).save(tiny_ham / "masks" / f"{wrong.image_id}_segmentation.png")
    res = validate_source(tiny_ham, report=tmp_path / "rep")
    assert not res.ok
    problems = "\n".join(res.problems())
    assert f"{cut.image_id}.jpg" in problems and "truncated" in problems.lower()
    assert f"{nomask.image_id}_segmentation.png" in problems and "mask file not found" in problems
    assert f"{wrong.image_id}_segmentation.png: mask 10x10 but image 40x30" in problems
    quarantined = {q["image_id"]: q["reason"] for q in res.quarantined}
    assert quarantined == {cut.image_id: "truncated", nomask.image_id: "missing mask"}
    with open(tmp_path / "rep" / "quarantine.csv") as f:
        assert {r["image_id"] for r in csv.DictReader(f)} == set(quarantined)
    # the CLI says the same on stderr and exits 1; --drop-invalid leaves exactly the quarantined pair out
    r = CliRunner().invoke(app, ["data", "validate", str(tiny_ham)])
    assert r.exit_code == 1 and cut.image_id in r.output and nomask.image_id in r.output
    dropped = validate_source(tiny_ham, drop_invalid=True)
    assert set(dropped.dropped) == set(quarantined)


def test_metadata_row_without_its_image(tiny_ham):
    ds = load_source(tiny_ham)
    gone = ds.records[4]
    (tiny_ham / "images" / f"{gone.image_id}.jpg").unlink()
    res = validate_source(tiny_ham)
    assert any(f"{gone.image_id}.jpg: file not found" in p for p in res.problems())
    with pytest.raises(DataError, match=f"{gone.image_id}.jpg: image file missing"):
        load_source(tiny_ham).image(gone)


def test_kfold_never_splits_a_lesion(tiny_ham, tmp_path):
    from tailsynth.data.splits import split_source

    rep = split_source(tiny_ham, tmp_path / "folds.csv", test=0.0, kfold=3, seed=1)
    with open(tmp_path / "folds.csv") as f:
        rows = list(csv.DictReader(f))
    fold_of = defaultdict(set)
    for r in rows:
        fold_of[r["group_id"]].add(r["split"])
    assert all(len(s) == 1 for s in fold_of.values())
    assert any(sum(1 for r in rows if r["group_id"] == g) > 1 for g in fold_of)  # multi-image lesions exist
    assert set(rep["splits"]) == {"fold0", "fold1", "fold2"}
    # each class is spread over the folds (stratified), and each per-fold manifest keeps lesions whole
    for i in range(3):
        ds = load_source(tiny_ham, splits=tmp_path / f"folds.fold{i}.csv")
        seen = defaultdict(set)
        for r in ds.records:
            seen[r.group_id].add(r.split)
        assert all(len(s) == 1 for s in seen.values())
        assert ds.class_counts("test")["DF"] >= 1


def test_expert_masks_are_used_and_labelled(tiny_ham, tmp_path):
    from tailsynth.masks import METHOD_EXPERT, compute_masks, masks_for_records

    ds = load_source(tiny_ham)
    masks, methods = masks_for_records(ds, ds.records[:4], 32)
    assert methods == [METHOD_EXPERT] * 4
    # the expert mask resized like the image: its lesion lies on the image's darker blob
    img = ds.image(ds.records[0], 32).astype(float).mean(-1)
    assert img[masks[0]].mean() < img[~masks[0]].mean() - 30
    (tiny_ham / "masks" / f"{ds.records[1].image_id}_segmentation.png").unlink()
    _, methods = masks_for_records(ds, ds.records[:2], 32)
    assert methods[0] == METHOD_EXPERT and methods[1] in ("otsu", "ellipse")
    summary = compute_masks(tiny_ham, tmp_path / "masks", size=32)
    assert summary["methods"][METHOD_EXPERT] == len(ds) - 1
    with open(tmp_path / "masks" / "masks.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {METHOD_EXPERT, methods[1]}
    assert 0.0 <= summary["otsu_vs_expert_iou"]["mean"] <= 1.0
    assert np.isfinite(summary["otsu_vs_expert_iou"]["median"])
