"""Lesion-level exclusion: candidates and memorization checks treat all images of one lesion as one."""

from __future__ import annotations

import csv

import numpy as np

from tailsynth.data import load_source
from tailsynth.ood.experiment import touches_reported_images
from tailsynth.ood.memorize import descriptor_nn, nn_distance
from tailsynth.ood.select import background_lesion_rows


def _multi_image_lesion(ds):
    by = {}
    for r in ds.records:
        by.setdefault(r.group_id, []).append(r)
    return next(v for v in by.values() if len(v) >= 2)


def test_candidate_on_another_image_of_a_reported_lesion_is_excluded(tiny_ham, tmp_path):
    from PIL import Image

    ds = load_source(tiny_ham)
    lesion = _multi_image_lesion(ds)
    other = next(r for r in ds.records if r.group_id != lesion[0].group_id)
    # the reported part holds only the lesion's first image; the candidate is painted on its second
    with open(tmp_path / "split.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "split"])
        for r in ds.records:
            w.writerow([r.image_id, "test" if r.image_id == lesion[0].image_id else "train"])
    cand = tmp_path / "cands"
    (cand / "images").mkdir(parents=True)
    with open(cand / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "class", "background_id", "source_id"])
        w.writerow(["c0", "DF", lesion[1].image_id, ""])
        w.writerow(["c1", "DF", other.image_id, ""])
    for cid in ("c0", "c1"):
        Image.new("RGB", (8, 8)).save(cand / "images" / f"{cid}.png")
    by_image = touches_reported_images(cand, ["c0", "c1"], tmp_path / "split.csv")
    by_lesion = touches_reported_images(cand, ["c0", "c1"], tmp_path / "split.csv", data=tiny_ham)
    assert by_image.tolist() == [False, False]  # the image-level rule misses the lesion's twin
    assert by_lesion.tolist() == [True, False]


def test_memorization_ignores_every_image_of_the_background_lesion(tiny_ham):
    ds = load_source(tiny_ham)
    lesion = _multi_image_lesion(ds)
    rows = background_lesion_rows(ds.records, [lesion[0].image_id, "not-a-training-image"])
    own = sorted(i for i, r in enumerate(ds.records) if r.group_id == lesion[0].group_id)
    assert sorted(x for x in rows[0] if x >= 0) == own and len(own) >= 2
    assert (rows[1] == -1).all()
    # a query equal to the lesion's images matches none of them once they are excluded
    ref = np.random.default_rng(0).random((len(ds.records), 12 * 12)).astype(np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    q = ref[own[:1]]
    d, j = nn_distance(q, ref, rows[:1])
    assert j[0] not in own and d[0] > 0
    d0, j0 = nn_distance(q, ref)
    assert j0[0] == own[0] and d0[0] == 0
    _, jd = descriptor_nn(q, ref, rows[:1])
    assert jd[0] not in own
