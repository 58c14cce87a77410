"""Replicates and the experiments' exclusions: lesions stay whole, one fold layout, reported lesions never train."""

from __future__ import annotations

import csv
from collections import defaultdict

from tailsynth.data import load_source
from tailsynth.data.splits import kfold_assign, split_source
from tailsynth.evaluation.augment import touches_reported_images
from tailsynth.evaluation.replicates import make_replicates


def _assign(path):
    with open(path) as f:
        return {r["image_id"]: r["split"] for r in csv.DictReader(f)}


def test_experiment_replicates_are_lesion_grouped(tiny_ham, tmp_path):
    reps = make_replicates(tiny_ham, tmp_path, folds=3, seeds=[0])
    ds = load_source(tiny_ham)
    lesion = {r.image_id: r.group_id for r in ds.records}
    tested = defaultdict(set)
    for rep in reps:
        with open(rep.manifest) as f:
            assign = {r["image_id"]: r["split"] for r in csv.DictReader(f)}
        parts = defaultdict(set)
        for iid, s in assign.items():
            parts[lesion[iid]].add(s)
            if s == "test":
                tested[lesion[iid]].add(rep.group)
        assert all(len(s) == 1 for s in parts.values()), "a lesion is in two parts of one replicate"
    assert all(len(f) == 1 for f in tested.values()) and len(tested) == len(set(lesion.values()))


def test_fold_i_is_the_reported_part_of_kfold_assign_and_split_writes_the_same_layout(tiny_ham, tmp_path):
    """Committed results (docs/results/ham_baseline) say "fold i" for kfold_assign's fold i as the test part; the
    experiments and `tailsynth data split --kfold` write that one layout."""
    ds = load_source(tiny_ham)
    fold_of = kfold_assign(ds.records, k=3, seed=0)
    reps = make_replicates(tiny_ham, tmp_path / "exp", folds=3, seeds=[0])
    split_source(tiny_ham, tmp_path / "folds.csv", kfold=3, seed=0)
    for i, rep in enumerate(reps):
        assign = _assign(rep.manifest)
        assert {iid for iid, s in assign.items() if s == "test"} == {iid for iid, f in fold_of.items() if f == i}
        assert _assign(tmp_path / f"folds.fold{i}.csv") == assign


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


