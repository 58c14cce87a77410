"""Splits: lesion-grouped, stratified, deterministic; k-fold; long-tail subsampler; manifests."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from tailsynth.cli import app
from tailsynth.data import load_source
from tailsynth.data.records import LesionDataset, Record
from tailsynth.data.splits import (
    ISIC2019_COUNTS,
    grouped_stratified_assign,
    groups_crossing_splits,
    kfold_assign,
    longtail_subsample,
    longtail_targets,
    split_dataset,
    split_source,
    subsample_train,
)
from tailsynth.errors import ConfigError

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def _worst_deviation(records, assign, fractions):
    """Largest |count - target| over classes and splits, in images."""
    worst = 0.0
    by_class = Counter(r.label for r in records)
    tot = sum(fractions.values())
    for c, n in by_class.items():
        got = Counter(assign[r.image_id] for r in records if r.label == c)
        for s, f in fractions.items():
            worst = max(worst, abs(got.get(s, 0) - n * f / tot))
    return worst


def test_real_split_grouped_stratified_deterministic(isic_sample):
    ds = load_source(isic_sample)
    assert max(Counter(r.group_id for r in ds.records).values()) > 1  # real multi-image lesions exist
    a = grouped_stratified_assign(ds.records, FRACTIONS, seed=3)
    split = ds.with_splits(a)
    assert groups_crossing_splits(split.records) == {}
    assert _worst_deviation(ds.records, a, FRACTIONS) <= 1.0
    assert grouped_stratified_assign(ds.records, FRACTIONS, seed=3) == a
    assert grouped_stratified_assign(ds.records, FRACTIONS, seed=4) != a


def test_real_kfold(isic_sample):
    ds = load_source(isic_sample)
    folds = kfold_assign(ds.records, k=5, seed=0)
    assert set(folds) == {r.image_id for r in ds.records} and set(folds.values()) == set(range(5))
    fold_of_group = {}
    for r in ds.records:
        assert fold_of_group.setdefault(r.group_id, folds[r.image_id]) == folds[r.image_id]
    assert _worst_deviation(ds.records, {k: str(v) for k, v in folds.items()}, {str(i): 1 for i in range(5)}) <= 1.0
    assert kfold_assign(ds.records, k=5, seed=0) == folds


def test_tiny_split_keeps_lesion_pairs_together(tiny_isic):
    ds = load_source(tiny_isic)  # every lesion has two images
    s = split_dataset(ds, val=0.2, test=0.2, seed=1)
    assert len(s) == len(ds)
    assert groups_crossing_splits(s.records) == {}
    assert s.splits == ["train", "val", "test"]
    # with 2-image groups, a class share can miss its target by at most one group
    a = {r.image_id: r.split for r in s.records}
    assert _worst_deviation(ds.records, a, {"train": 0.6, "val": 0.2, "test": 0.2}) <= 2.0


@pytest.mark.parametrize("ratio", [10, 59])
def test_longtail_hits_target_ratio(isic_sample, ratio):
    ds = load_source(isic_sample)
    lt = longtail_subsample(ds, imbalance_ratio=ratio, seed=0)
    counts = {c: n for c, n in lt.class_counts().items() if n}
    assert counts == longtail_targets(ds.class_counts(), ratio)
    tail = min(counts.values())
    assert abs(max(counts.values()) / tail - ratio) <= 0.5 / tail * ratio + 1e-9  # head rounded to one image
    assert max(counts, key=counts.get) == "NV" and min(counts, key=counts.get) == "DF"
    assert groups_crossing_splits(lt.records) == {}
    ids = {r.image_id for r in lt.records}
    assert {r.image_id for r in longtail_subsample(ds, imbalance_ratio=ratio, seed=0).records} == ids


def test_longtail_isic_proportions(isic_sample):
    ds = load_source(isic_sample)
    lt = longtail_subsample(ds, seed=0)
    counts = lt.class_counts()
    scale = counts["NV"] / ISIC2019_COUNTS["NV"]
    for c, n in ISIC2019_COUNTS.items():
        assert abs(counts[c] - n * scale) <= 1.0, (c, counts[c], n * scale)


def test_longtail_ratio_too_high_is_explained(tiny_isic):
    ds = load_source(tiny_isic)
    with pytest.raises(ValueError, match="too few for imbalance ratio"):
        longtail_subsample(ds, imbalance_ratio=1000)


def test_split_source_manifest_roundtrip(isic_sample, tmp_path):
    out = tmp_path / "m.csv"
    rep = split_source(isic_sample, out, val=0.15, test=0.15, seed=0)
    assert rep["kept"] == 1436
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image_id", "label", "group_id", "split"]
    ds = load_source(isic_sample, splits=out)
    assert ds.splits == ["train", "val", "test"]
    assert {s: sum(c.values()) for s, c in ds.stats()["splits"].items()} == \
        {s: sum(c.values()) for s, c in rep["splits"].items()}
    again = tmp_path / "m2.csv"
    split_source(isic_sample, again, val=0.15, test=0.15, seed=0)
    assert again.read_bytes() == out.read_bytes()


def test_split_source_kfold_manifests(tiny_isic, tmp_path):
    out = tmp_path / "folds.csv"
    rep = split_source(tiny_isic, out, kfold=3, seed=0)
    assert len(rep["manifests"]) == 4
    ds = load_source(tiny_isic, splits=out)
    assert set(ds.splits) == {"fold0", "fold1", "fold2"}
    tests = set()
    for i in range(3):  # fold i is the test part of its manifest (the experiments' layout), val an inner share
        f = load_source(tiny_isic, splits=tmp_path / f"folds.fold{i}.csv")
        assert set(f.splits) == {"train", "val", "test"}
        assert groups_crossing_splits(f.records) == {}
        t = {r.image_id for r in f.split("test").records}
        assert t == {r.image_id for r in ds.records if r.split == f"fold{i}"} and not (t & tests)
        tests |= t
    assert tests == {r.image_id for r in ds.records}
    with pytest.raises(ConfigError, match="held-out test share"):
        split_source(tiny_isic, out, kfold=3, test=0.2)


def test_npz_keeps_its_own_splits_unless_resplit(tiny_npz, tmp_path):
    rep = split_source(tiny_npz, tmp_path / "a.csv")
    assert set(rep["splits"]) == {"train", "val"} and sum(rep["splits"]["val"].values()) == 15
    rep = split_source(tiny_npz, tmp_path / "b.csv", resplit=True, val=0.2, test=0.2)
    assert set(rep["splits"]) == {"train", "val", "test"}


def test_cli_split(isic_sample, tmp_path):
    out = tmp_path / "lt.csv"
    res = CliRunner().invoke(app, ["data", "split", str(isic_sample), "--out", str(out), "--imbalance-ratio", "10",
                                   "--seed", "1"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    total = Counter()
    for counts in rep["splits"].values():
        total.update(counts)
    assert total["NV"] == 10 * total["DF"]
    bad = CliRunner().invoke(app, ["data", "split", str(isic_sample), "--out", str(out), "--val", "0.6",
                                   "--test", "0.5"])
    assert bad.exit_code == 1 and "leaves nothing to train on" in bad.stderr


def _constructed(train_counts: dict[str, int], val_per_class: int = 4, pairs: bool = False) -> LesionDataset:
    """Records only (no pixels): TRAIN_COUNTS images per class in train, VAL_PER_CLASS in val; with PAIRS, two
    consecutive train images of a class share a lesion."""
    recs = []
    for c, n in train_counts.items():
        for i in range(n):
            gid = f"{c}-L{i // 2}" if pairs else f"{c}-{i}"
            recs.append(Record(image_id=f"{c}-{i}", label=c, group_id=gid, split="train"))
        recs += [Record(image_id=f"{c}-v{i}", label=c, group_id=f"{c}-v{i}", split="val") for i in range(val_per_class)]
    return LesionDataset(recs, "constructed", "medmnist", loader=lambda r: None)


TRAIN_COUNTS = {"NV": 400, "MEL": 120, "BKL": 60, "DF": 12, "VASC": 3}


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_train_fraction_counts_per_class(fraction):
    ds = _constructed(TRAIN_COUNTS)
    sub = subsample_train(ds, fraction, seed=0)
    got = sub.class_counts("train")
    # round(fraction * n), at least 5 images per class, never more than the class has (VASC keeps all 3).
    assert got == {c: min(n, max(5, round(fraction * n))) for c, n in TRAIN_COUNTS.items()}
    assert sub.class_counts("val") == ds.class_counts("val")  # evaluation images untouched
    assert {r.image_id for r in sub.records} <= {r.image_id for r in ds.records}


def test_train_fraction_deterministic_nested_and_seeded():
    ds = _constructed(TRAIN_COUNTS)

    def ids(d):
        return [r.image_id for r in d.split("train").records]

    quarter, half = subsample_train(ds, 0.25, seed=3), subsample_train(ds, 0.5, seed=3)
    assert ids(quarter) == ids(subsample_train(ds, 0.25, seed=3))  # same seed, same images, same order
    assert set(ids(quarter)) < set(ids(half))  # a smaller fraction's images are part of a larger one's
    assert set(ids(quarter)) != set(ids(subsample_train(ds, 0.25, seed=4)))
    assert subsample_train(ds, 1.0, seed=3) is ds


def test_train_fraction_keeps_lesions_whole():
    ds = _constructed({"NV": 40, "MEL": 20}, pairs=True)
    sub = subsample_train(ds, 0.5, seed=1)
    kept = Counter(r.group_id for r in sub.split("train").records)
    assert set(kept.values()) == {2}  # both images of every kept lesion
    assert sub.class_counts("train") == {"NV": 20, "MEL": 10}


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_train_fraction_out_of_range_is_named(fraction):
    with pytest.raises(ConfigError, match="train_fraction"):
        subsample_train(_constructed({"NV": 10}), fraction)
